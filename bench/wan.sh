#!/usr/bin/env bash
# bench/wan.sh - big transfers over a simulated WAN (issue 18): the test kit's relay
# (hoist-relay) between the client and a local registry, at 50 ms RTT, a 2 MiB in-flight cap
# per connection (one connection tops out near 40 MiB/s) and 1 Gbit/s for the link (~119 MiB/s).
#
#   bench/wan.sh [PULL_MIB] [PUSH_MIB] [LAYERS]     # defaults: 4096 2048 20
#
# Cases: one PULL_MIB blob pulled with lanes (hoist's default), with one connection
# (--lanes 1) and by skopeo; a LAYERS-layer image of PUSH_MIB in all pushed by hoist and by
# skopeo; a pull killed (SIGKILL) at 50% and run again. Every row shows the physical limit
# (bytes / link rate) beside the time. Needs cargo-built target/debug/{hoist,hoist-relay};
# skopeo rows are skipped when skopeo is missing. Env: RTT_MS, WINDOW (e.g. 2m), MBIT.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
pull_mib=${1:-4096}; push_mib=${2:-2048}; layers=${3:-20}
rtt_ms=${RTT_MS:-50}; window=${WINDOW:-2m}; mbit=${MBIT:-1000}
bin=$root/target/debug
hoist=$bin/hoist
[ -x "$hoist" ] && [ -x "$bin/hoist-relay" ] || { echo "build first: cargo build --bins -p hoist -p hoist-testkit" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/hoist-wan.XXXXXX")
relay_pid=
cleanup() {
  [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null || true
  "$here/registry.sh" stop "$work/reg" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

eval "$("$here/registry.sh" start "$work/reg")"   # REG=127.0.0.1:PORT
"$bin/hoist-relay" --upstream "$REG" --rtt-ms "$rtt_ms" --window "$window" --mbit "$mbit" > "$work/relay.out" &
relay_pid=$!
for _ in $(seq 1 50); do [ -s "$work/relay.out" ] && break; sleep 0.1; done
WAN=$(head -1 "$work/relay.out")

# A layout with layers of the given MiB sizes (random bytes), tagged v1.
make_layout() {
  local dir=$1; shift
  python3 - "$dir" "$@" <<'EOF'
import hashlib, json, os, sys
root = sys.argv[1]; sizes = [int(x) for x in sys.argv[2:]]
os.makedirs(root + "/blobs/sha256", exist_ok=True)
def put(b=None, path=None):
    if path:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for c in iter(lambda: f.read(1 << 20), b""): h.update(c)
        d = h.hexdigest(); os.rename(path, f"{root}/blobs/sha256/{d}"); return d, os.path.getsize(f"{root}/blobs/sha256/{d}")
    d = hashlib.sha256(b).hexdigest(); open(f"{root}/blobs/sha256/{d}", "wb").write(b); return d, len(b)
layers = []
for i, mib in enumerate(sizes):
    tmp = f"{root}/tmp-{i}"
    with open(tmp, "wb") as f:
        for _ in range(mib): f.write(os.urandom(1 << 20))
    layers.append(put(path=tmp))
cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": ["sha256:" + d for d, _ in layers]}}).encode()
cd, cs = put(cfg)
m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + cd, "size": cs},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + d, "size": s} for d, s in layers]}).encode()
md, ms = put(m)
open(root + "/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
open(root + "/index.json", "w").write(json.dumps({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": "sha256:" + md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}))
EOF
}

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }
limit() { python3 -c "print(f'{$1 / ($mbit * 1e6 / 8 / 1048576):.2f}')"; }   # MiB / link MiB/s
one_conn() { python3 -c "
w='$window'.lower(); m={'k':1<<10,'m':1<<20,'g':1<<30}
b=int(w[:-1])*m[w[-1]] if w[-1] in m else int(w)
print(f'{$1 * 1048576 / (b / ($rtt_ms / 1000)):.2f}')"; }
row() { printf '%-44s %8s s   limit %8s s   (%s)\n' "$1" "$2" "$3" "$4"; }
have_skopeo() { command -v skopeo >/dev/null; }

echo "# WAN bench: RTT ${rtt_ms} ms, window ${window} per connection, ${mbit} Mbit/s; pull ${pull_mib} MiB, push ${push_mib} MiB in ${layers} layers"
echo "# $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

make_layout "$work/big" "$pull_mib"
"$hoist" -q push "$work/big:v1" "$REG/bench/big:v1" >/dev/null

pull() { rm -rf "$work/out"; "$hoist" -q --insecure-registry "$WAN" "$@" pull "$WAN/bench/big:v1" "$work/out:v1" >/dev/null; }

t0=$(now); pull; t1=$(now); lanes_t=$(secs "$t0" "$t1")
row "pull ${pull_mib} MiB, hoist (lanes, default)" "$lanes_t" "$(limit "$pull_mib")" "link"
t0=$(now); pull --lanes 1; t1=$(now); one_t=$(secs "$t0" "$t1")
row "pull ${pull_mib} MiB, hoist --lanes 1" "$one_t" "$(one_conn "$pull_mib")" "one connection"
if have_skopeo; then
  rm -rf "$work/sk"
  t0=$(now); skopeo copy -q --src-tls-verify=false "docker://$WAN/bench/big:v1" "oci:$work/sk:v1" >/dev/null; t1=$(now)
  sk_t=$(secs "$t0" "$t1"); rm -rf "$work/sk"
  row "pull ${pull_mib} MiB, skopeo" "$sk_t" "$(limit "$pull_mib")" "link"
fi

# resume: kill -9 once the partial state says half is written, then run again
rm -rf "$work/out"
"$hoist" -q --insecure-registry "$WAN" pull "$WAN/bench/big:v1" "$work/out:v1" >/dev/null 2>&1 &
pid=$!
half=$((pull_mib * 1048576 / 2))
while kill -0 "$pid" 2>/dev/null; do
  done_bytes=$(python3 -c "
import glob, json
t = 0
for p in glob.glob('$work/out/.hoist/partial/*.state'):
    try: t += sum(json.load(open(p))['written'].values())
    except Exception: pass
print(t)")
  [ "$done_bytes" -ge "$half" ] && break
  sleep 0.05
done
kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
t0=$(now); "$hoist" -q --insecure-registry "$WAN" pull "$WAN/bench/big:v1" "$work/out:v1" >/dev/null; t1=$(now)
resume_t=$(secs "$t0" "$t1")
row "pull resumed after kill -9 at 50%" "$resume_t" "$(limit $((pull_mib / 2)))" "link, half the blob"
"$hoist" layout fsck "$work/out" >/dev/null 2>&1 && echo "# fsck after resume: clean"
rm -rf "$work/out" "$work/big"

per=$((push_mib / layers)); sizes=(); for _ in $(seq 1 "$layers"); do sizes+=("$per"); done
make_layout "$work/img" "${sizes[@]}"
t0=$(now); "$hoist" -q --insecure-registry "$WAN" push "$work/img:v1" "$WAN/bench/h:v1" >/dev/null; t1=$(now)
push_t=$(secs "$t0" "$t1")
row "push ${layers}x${per} MiB, hoist" "$push_t" "$(limit $((per * layers)))" "link"
if have_skopeo; then
  t0=$(now); skopeo copy -q --dest-tls-verify=false "oci:$work/img:v1" "docker://$WAN/bench/s:v1" >/dev/null; t1=$(now)
  row "push ${layers}x${per} MiB, skopeo" "$(secs "$t0" "$t1")" "$(limit $((per * layers)))" "link"
fi
python3 -c "
l, o, r = $lanes_t, $one_t, $resume_t
print(f'# lanes vs one connection: {o / l:.2f}x faster; resume / fresh: {r / l:.2f}x')"
