#!/usr/bin/env bash
# bench/containerd.sh - an image of SIZE_MIB (default 1024) MiB into containerd three ways:
#   1. hoist direct:      hoist copy oci:SRC:v1 containerd:SOCK#ns/bench:v1
#   2. docker-archive:    hoist copy oci:SRC:v1 docker-archive:X.tar:bench:v1 + ctr images import
#   3. skopeo oci-archive: skopeo copy oci:SRC:v1 oci-archive:Y.tar:bench:v1 + ctr images import
# Each route gets a fresh containerd (own socket and root, CRI off) and unpacks into the same
# snapshotter (ctr import unpacks by default; so does hoist). Reported per route: wall time,
# peak RSS of the client processes (hoist, skopeo, ctr; containerd is the same daemon in all
# three), and bytes written to disk by the clients and containerd (/proc/PID/io write_bytes,
# plus GNU time's block outputs for the clients).
#
#   sudo SIZE_MIB=256 bench/containerd.sh        # needs root, containerd, ctr, skopeo
# The layer is random bytes stored uncompressed (the transport is measured, not gzip).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-1024}
SNAPSHOTTER=${SNAPSHOTTER:-overlayfs}
HOIST=${HOIST:-target/release/hoist}
[ "$(id -u)" = 0 ] || { echo "bench/containerd.sh needs root (containerd)" >&2; exit 2; }
for t in containerd ctr skopeo /usr/bin/time; do command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 2; }; done
[ -x "$HOIST" ] || cargo build --release -q
work=$(mktemp -d /tmp/hoist-ctr-bench-XXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  grep -o "$work[^ ]*" /proc/self/mounts 2>/dev/null | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The source image: one layer of SIZE_MIB random bytes, uncompressed, in a layout tagged v1.
mkdir -p "$work/build"
head -c "$((SIZE_MIB << 20))" /dev/urandom > "$work/build/data.bin"
cat > "$work/build/hoist.toml" <<EOF
compression = "none"
cmd = ["/data.bin"]
[[layers]]
files = [ { source = "data.bin", target = "/data.bin" } ]
EOF
digest=$(HOIST_STORE="$work/store" "$HOIST" build -q -f "$work/build/hoist.toml")
"$HOIST" copy -q "oci:$work/store@$digest" "oci:$work/src:v1" >/dev/null
rm -f "$work/build/data.bin"
sync

start_containerd() { # NAME -> sets SOCK, CPID
  local d=$work/$1
  mkdir -p "$d"
  cat > "$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$d/c.sock"
[ttrpc]
  address = "$d/t.sock"
EOF
  containerd --config "$d/config.toml" >"$d/log" 2>&1 &
  CPID=$!
  pids+=("$CPID")
  SOCK=$d/c.sock
  for _ in $(seq 1 100); do ctr --address "$SOCK" version >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "containerd did not start: $(cat "$d/log")" >&2; exit 1
}

wbytes() { awk '/^write_bytes/ {print $2}' "/proc/$1/io"; }

# run NAME CMD...: appends "wall_s rss_kib out_blocks" of CMD to $work/NAME.times
run() {
  local name=$1; shift
  /usr/bin/time -a -o "$work/$name.times" -f "%e %M %O" "$@" >/dev/null
}

report() { # LABEL NAME
  local label=$1 wall=0 rss=0 blocks=0
  while read -r w m o; do
    wall=$(awk -v a="$wall" -v b="$w" 'BEGIN {print a + b}'); [ "$m" -gt "$rss" ] && rss=$m; blocks=$((blocks + o))
  done < "$work/$2.times"
  local cw=$(( $(wbytes "$CPID") - C0 ))
  printf '%-32s %8.2f s %8d MiB %10d MiB\n' "$label" "$wall" "$((rss / 1024))" "$(( (blocks * 512 + cw) >> 20 ))"
}

printf '# %d MiB image (1 uncompressed layer), snapshotter %s, %s\n' "$SIZE_MIB" "$SNAPSHOTTER" "$(uname -r)"
printf '%-32s %10s %12s %14s\n' route wall "peak RSS" "bytes written"

start_containerd direct; C0=$(wbytes "$CPID")
run direct env CONTAINERD_SNAPSHOTTER="$SNAPSHOTTER" "$HOIST" copy -q "oci:$work/src:v1" "containerd:$SOCK#bench/bench:v1"
sync; report "hoist direct" direct

start_containerd darchive; C0=$(wbytes "$CPID")
run darchive "$HOIST" copy -q "oci:$work/src:v1" "docker-archive:$work/x.tar:bench:v1"
run darchive ctr --address "$SOCK" -n bench images import --snapshotter "$SNAPSHOTTER" "$work/x.tar"
sync; report "hoist docker-archive + ctr" darchive
rm -f "$work/x.tar"

start_containerd skopeo; C0=$(wbytes "$CPID")
run skopeo skopeo --insecure-policy copy -q "oci:$work/src:v1" "oci-archive:$work/y.tar:bench:v1"
run skopeo ctr --address "$SOCK" -n bench images import --snapshotter "$SNAPSHOTTER" "$work/y.tar"
sync; report "skopeo oci-archive + ctr" skopeo
rm -f "$work/y.tar"

# The same without unpacking (content store only).
start_containerd direct-nu; C0=$(wbytes "$CPID")
run direct-nu "$HOIST" copy -q --unpack=false "oci:$work/src:v1" "containerd:$SOCK#bench/bench:v1"
sync; report "hoist direct, no unpack" direct-nu

start_containerd darchive-nu; C0=$(wbytes "$CPID")
run darchive-nu "$HOIST" copy -q "oci:$work/src:v1" "docker-archive:$work/x.tar:bench:v1"
run darchive-nu ctr --address "$SOCK" -n bench images import --no-unpack "$work/x.tar"
sync; report "docker-archive + ctr, no unpack" darchive-nu
rm -f "$work/x.tar"

start_containerd skopeo-nu; C0=$(wbytes "$CPID")
run skopeo-nu skopeo --insecure-policy copy -q "oci:$work/src:v1" "oci-archive:$work/y.tar:bench:v1"
run skopeo-nu ctr --address "$SOCK" -n bench images import --no-unpack "$work/y.tar"
sync; report "skopeo + ctr, no unpack" skopeo-nu
