#!/usr/bin/env bash
# Runs every example of every command's --help (the lines after "Examples:" that call
# `hoist`), each in a fresh copy of one prepared workspace, registry included: the registry
# this script starts on localhost:5000 (another free port when 5000 is taken: `localhost:5000`
# in the examples is rewritten to it) serves that copy's data, so an example that deletes or
# re-tags something changes nothing for the next one. A failing example fails CI, so an
# example cannot rot: it parses, and it does what it says on what the workspace holds.
#
# The workspace: `examples/` linked in; `./layout` (the sample layout, also tagged v1, signed
# by cosign.key and with an https://example.com/p/v1 attestation); one-platform layouts `./a`,
# `./b`, `./inv`, `./web` (v1) and `./out` (v2); `./base` (old: the sample image, new: it
# flattened) and `./app` (v1: hoist.toml built on base:old); `./my-model` (signed, model.sig);
# `./models` (a model, v1 and v2); `./bundle` (a bundle, v1); `./airgap` (a `sync --dest dir`
# layout of demo); archives `demo.tar`, `model.tar`, `bundle.tar`; `hoist.toml` and a
# `Dockerfile` building from it; `bundle.json`, `sbom.json`, `sbom.spdx.json`, `prov.json`,
# `sync.yaml`, `README.md`, `Modelfile`; layer tarballs `ca-certs.tar.gz` and `patch.tar`;
# metadata files `amd64.json`/`arm64.json`; a cosign key pair `cosign.key`/`cosign.pub` whose
# password is in COSIGN_PASSWORD (and `pw.txt`); a build store holding `sample:latest`; a login
# for localhost:5000 (user alice). The registry holds demo:v1 (signed, with a SLSA provenance
# attestation; also tagged old and rc1), base:1, base:2 (base:1 flattened), app:v1 (hoist.toml
# built on base:1), app:amd64, app:arm64, app-inv:v1, web:v1, model:v1 (signed), model:v2,
# kit:v1 and app-bundle:v1. `REPO@sha256:…` in an example stands for the digest of REPO:v1.
# HOME, DOCKER_CONFIG and HOIST_STORE point into the workspace, so nothing outside it is
# touched.
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

export PATH="$bin:$PATH"
tpl="$work/template"
mkdir -p "$tpl"
registry_start "$tpl/registry"
ln -s "$repo/examples" "$tpl/examples"
(
  cd "$tpl"
  export HOME="$tpl/home" DOCKER_CONFIG="$tpl/docker" HOIST_STORE="$tpl/store" COSIGN_PASSWORD=secret
  mkdir -p "$HOME/.local/share/bash-completion/completions" "$HOME/.zfunc" \
    "$HOME/.config/fish/completions" "$HOME/.local/share/man/man1" "$DOCKER_CONFIG"
  set -x
  cp -r examples/sample-layout layout && chmod -R u+w layout
  hoist -q copy oci:./layout:multi oci:./layout:v1
  cp -r examples/sample-model my-model && chmod -R u+w my-model
  cp examples/hoist.toml hoist.toml && cp -r examples/sample-image sample-image
  printf 'FROM scratch\nCOPY sample-image /app\n' > Dockerfile
  printf 'NAME sample\nARCH transformer\nFAMILY sample\n' > Modelfile
  echo '{"spdxVersion":"SPDX-2.3"}' > sbom.json
  echo '# docs' > README.md
  echo secret > password.txt
  for d in a inv web; do hoist -q --platform linux/amd64 copy oci:./layout:multi "oci:./$d:v1"; done
  hoist -q --platform linux/arm64 copy oci:./layout:multi oci:./b:v1
  hoist -q --platform linux/amd64 copy oci:./layout:multi oci:./out:v2
  hoist -q copy oci:./layout:v1 oci-archive:demo.tar:v1
  hoist -q copy oci:./layout:multi "$R/demo:v1"
  hoist -q copy oci:./layout:multi "$R/app:v1"
  for p in amd64 arm64; do
    hoist -q --platform "linux/$p" copy oci:./layout:multi "$R/app:$p"
    hoist -q build -f hoist.toml --platform "linux/$p" --metadata-file "$p.json" \
      --output "type=image,name=$R/app,push=true,push-by-digest=true"
  done
  hoist -q copy oci:./layout:multi "$R/base:1"
  hoist -q flatten "$R/base:1" "$R/base:2"
  hoist -q build -f hoist.toml --base "docker://$R/base:1" --output "docker://$R/app:v1"
  hoist -q copy oci:./layout:multi oci:./base:old
  hoist -q flatten oci:./base:old oci:./base:new
  hoist -q build -f hoist.toml --base oci:./base:old --output oci:./app:v1
  hoist -q copy oci:./inv:v1 "$R/app-inv:v1"
  hoist -q copy oci:./web:v1 "$R/web:v1"
  hoist -q model pack ./my-model --name my-model --model-version 1 --output "type=registry,name=$R/model:v1"
  hoist -q model pack ./my-model --name my-model --model-version 2 --output "type=registry,name=$R/model:v2"
  hoist -q model pack ./my-model --name my-model --to modelkit --output "type=registry,name=$R/kit:v1"
  hoist -q model pack ./my-model --name my-model --model-version 1 --output type=local-layout,dest=./models,name=my-model:v1
  hoist -q model pack ./my-model --name my-model --model-version 2 --output type=local-layout,dest=./models,name=my-model:v2
  hoist -q model pack ./my-model --name my-model --output type=oci,dest=model.tar
  hoist -q bundle create --name app --version 1.0.0 --invocation "$R/app-inv:v1" --tag "$R/app-bundle:v1"
  hoist -q bundle create --name app --version 1.0.0 --invocation oci:./inv:v1 --component web=oci:./web:v1 --tag oci:./bundle:v1
  hoist -q bundle create --name app --version 1.0.0 --invocation oci:./inv:v1 --output type=oci,dest=bundle.tar
  cat > bundle.json <<JSON
{"schemaVersion":"1.2.0","name":"app","version":"1.0.0","invocationImages":[{"imageType":"oci","image":"$R/app-inv:v1"}],"images":{"web":{"imageType":"oci","image":"$R/web:v1"}}}
JSON
  hoist -q build -f hoist.toml
  hoist -q login "$R" -u alice -p secret 2>/dev/null
  hoist -q tag "$R/demo:v1" old rc1
  mkdir -p layers/etc/ssl/certs && echo cert > layers/etc/ssl/certs/ca.pem && echo fix > layers/patch.txt
  tar -C layers -czf ca-certs.tar.gz etc && tar -C layers -cf patch.tar patch.txt && rm -r layers
  cat > sync.yaml <<YML
$R:
  tls-verify: false
  images:
    demo: [v1]
YML
  hoist -q sync --src yaml --dest dir sync.yaml ./airgap
  echo secret > pw.txt
  hoist -q key generate
  cat > prov.json <<JSON
{"buildDefinition":{"buildType":"https://example.com/build/v1","externalParameters":{}},"runDetails":{"builder":{"id":"https://example.com/builder"}}}
JSON
  echo '{"result":"pass"}' > p.json
  hoist -q --format spdx-json --platform linux/amd64 sbom oci:./layout:v1 > sbom.spdx.json
  hoist -q sign --key cosign.key "$R/demo:v1"
  hoist -q attest --key cosign.key --type slsaprovenance1 --predicate prov.json "$R/demo:v1"
  hoist -q sign --key cosign.key oci:./layout:v1
  hoist -q attest --key cosign.key --type https://example.com/p/v1 --predicate p.json oci:./layout:v1
  hoist -q model sign --key cosign.key "$R/model:v1"
  hoist -q model sign --key cosign.key ./my-model
) > "$work/prepare.log" 2>&1 || {
  registry_stop
  tail -30 "$work/prepare.log" >&2
  echo "help-examples: preparing the workspace failed (above)" >&2
  exit 1
}
registry_stop

# Every command path, from the help's "Commands:" lists.
commands() {
  local path="$1"
  echo "$path"
  # shellcheck disable=SC2086
  hoist $path --help | awk '/^Commands:/ { on = 1; next } on && /^[^ ]/ { on = 0 } on && /^  [a-z]/ { print $1 }' |
    while read -r sub; do
      if [ "$sub" != help ]; then commands "$path $sub"; fi
    done
}

n=0
failed=0
while read -r path; do
  # shellcheck disable=SC2086
  examples=$(hoist $path --help | awk '/^Examples:/ { on = 1; next } on && /^[^ ]/ { on = 0 } on && /hoist / { sub(/^ +/, ""); print }')
  while IFS= read -r example; do
    [ -n "$example" ] || continue
    n=$((n + 1))
    line=${example//localhost:5000/$R}
    ws="$work/ws-$n"
    cp -a "$tpl" "$ws"
    registry_start "$ws/registry"
    # `REPO@sha256:…` stands for the digest of REPO:v1.
    while [[ "$line" =~ ([^[:space:]]+)@sha256:… ]]; do
      name=${BASH_REMATCH[1]}
      line=${line//"$name@sha256:…"/"$name@$(hoist digest "$name:v1")"}
    done
    # An example that ends in `# exit N: why` must exit N (model diff: 1 when models differ).
    want=0
    if [[ "$example" =~ \#\ exit\ ([0-9]+) ]]; then want=${BASH_REMATCH[1]}; fi
    got=0
    (cd "$ws" && HOME="$ws/home" DOCKER_CONFIG="$ws/docker" HOIST_STORE="$ws/store" PASSWORD=secret \
      COSIGN_PASSWORD=secret bash -euo pipefail -c "$line" < /dev/null > "$ws.log" 2>&1) || got=$?
    registry_stop
    if [ "$got" -ne "$want" ]; then
      failed=$((failed + 1))
      echo "help-examples: FAILED (exit $got, not $want) (hoist $path --help): $example" >&2
      tail -5 "$ws.log" | cut -c1-300 | sed 's/^/    /' >&2
    fi
    rm -rf "$ws"
  done <<< "$examples"
done < <(commands "")

echo "help-examples: $n example(s) run, $failed failed, against $R"
[ "$failed" -eq 0 ]
