#!/usr/bin/env bash
# Runs every ```sh block of README.md, in order, in one shell (set -euo pipefail: a failing
# example fails CI), against a registry this script starts on localhost:5000 (another free
# port when 5000 is taken: `localhost:5000` in the blocks is rewritten to it).
#
# Not run: blocks that install or test hoist itself or run the benchmarks (they contain
# `cargo install`, `cargo test` or `bench/run.sh`), and ```console blocks, which need what CI
# has not got (a containerd or podman daemon of the user's, the Hugging Face hub). `cargo run --release -- ` in a block is the
# `hoist` this script built (a debug build is enough for the examples).
# Everything runs in a temporary directory with `examples/` linked in, with its own
# DOCKER_CONFIG and HOIST_STORE, so nothing outside it is touched.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
cargo build --locked -q --bin hoist
bin="$repo/target/debug"

work=$(mktemp -d)
# shellcheck source=.ci/registry.sh
. "$repo/.ci/registry.sh"
cleanup() {
  registry_stop
  rm -rf "$work"
}
trap cleanup EXIT
registry_start "$work/registry"

# The blocks, each as it stands in the README (a comment line names where it starts).
awk -v port="$port" '
  /^```sh[[:space:]]*$/ { inblock = 1; n++; buf = "# README.md block " n " (line " NR + 1 ")\n"; next }
  /^```/ && inblock { inblock = 0;
    if (buf !~ /cargo install|cargo test|bench\/run\.sh/) printf "%s", buf;
    next }
  inblock { line = $0; gsub(/cargo run --release -- /, "hoist ", line); gsub(/localhost:5000/, "localhost:" port, line); buf = buf line "\n" }
' README.md > "$work/examples.sh"

mkdir -p "$work/run"
ln -s "$repo/examples" "$work/run/examples"
cd "$work/run"
export PATH="$bin:$PATH" DOCKER_CONFIG="$work/docker" HOIST_STORE="$work/store"
mkdir -p "$DOCKER_CONFIG"
echo "readme-examples: $(grep -c '^# README.md block' "$work/examples.sh") block(s) against localhost:$port"
if ! bash -euo pipefail -x "$work/examples.sh" > "$work/out.log" 2>&1; then
  tail -40 "$work/out.log" >&2
  echo "readme-examples: a README example failed (above)" >&2
  exit 1
fi
echo "readme-examples: ok"
