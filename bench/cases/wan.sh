# bench/cases/wan.sh - big transfers over a simulated WAN (issue 18), a case of bench/run.sh:
#
#   BENCH_CASES=wan BENCH_RUNS=1 bench/run.sh
#
# The test kit's relay (hoist-relay, release build) sits between the client and the bench
# registry: 50 ms RTT, a 2 MiB in-flight cap per connection (one connection tops out near
# 40 MiB/s) and 1 Gbit/s for the link (~119 MiB/s); `tc netem` is not available here.
# Cases (each tool label carries its physical limit: bytes / link rate, or bytes / one
# connection's rate for --lanes 1):
#   wan-pull    one BENCH_WAN_PULL_MIB blob (default 4096): hoist (lanes, its default),
#               hoist --lanes 1, skopeo
#   wan-push    a BENCH_WAN_LAYERS-layer image (default 20) of BENCH_WAN_PUSH_MIB (default 2048):
#               hoist, skopeo (fresh registry each run), and hoist without the relay (what the
#               registry itself takes on this machine: the other ceiling)
#   wan-resume  the pull killed (SIGKILL) once half the blob is written, then run again (timed),
#               beside a fresh pull
# Env: BENCH_WAN_RTT_MS (50), BENCH_WAN_WINDOW (2m), BENCH_WAN_MBIT (1000). Needs python3;
# skopeo rows are skipped without skopeo. Sourced by run.sh: uses queue/measure_queued,
# registry_fresh, $HQ, $SK, $DATA, $WORK, $OUT, $ROOT.

wan_pull_mib=${BENCH_WAN_PULL_MIB:-4096}
wan_push_mib=${BENCH_WAN_PUSH_MIB:-2048}
wan_layers=${BENCH_WAN_LAYERS:-20}
wan_rtt=${BENCH_WAN_RTT_MS:-50}
wan_window=${BENCH_WAN_WINDOW:-2m}
wan_mbit=${BENCH_WAN_MBIT:-1000}

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  log "cargo build --release -p hoist-testkit --bin hoist-relay"
  (cd "$ROOT" && cargo build --release --quiet -p hoist-testkit --bin hoist-relay)
fi
WAN_RELAY_BIN=$ROOT/target/release/hoist-relay

# wan_layout DIR MIB...: an OCI layout with one random layer per MIB (cached: kept while the
# sizes match), tagged v1.
wan_layout() {
  local dir=$1; shift
  [ -f "$dir/sizes" ] && [ "$(cat "$dir/sizes")" = "$*" ] && return 0
  rm -rf "$dir"
  python3 - "$dir" "$@" <<'EOF'
import hashlib, json, os, sys
root = sys.argv[1]; sizes = [int(x) for x in sys.argv[2:]]
os.makedirs(root + "/blobs/sha256", exist_ok=True)
def put_bytes(b):
    d = hashlib.sha256(b).hexdigest(); open(f"{root}/blobs/sha256/{d}", "wb").write(b); return d, len(b)
layers = []
for i, mib in enumerate(sizes):
    tmp, h = f"{root}/tmp-{i}", hashlib.sha256()
    with open(tmp, "wb") as f:
        for _ in range(mib):
            c = os.urandom(1 << 20); h.update(c); f.write(c)
    d = h.hexdigest(); os.rename(tmp, f"{root}/blobs/sha256/{d}"); layers.append((d, mib << 20))
cfg = json.dumps({"architecture": "amd64", "os": "linux",
                  "rootfs": {"type": "layers", "diff_ids": ["sha256:" + d for d, _ in layers]}}).encode()
cd, cs = put_bytes(cfg)
m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + cd, "size": cs},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + d, "size": s}
               for d, s in layers]}).encode()
md, ms = put_bytes(m)
open(root + "/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
open(root + "/index.json", "w").write(json.dumps({"schemaVersion": 2, "manifests": [
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + md, "size": ms,
     "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}))
EOF
  echo "$*" > "$dir/sizes"
}

# seconds for MIB at the link rate, and at one connection's rate (window / RTT)
wan_limit() { python3 -c "print(f'{$1 / ($wan_mbit * 1e6 / 8 / 1048576):.1f}')"; }
wan_one_conn() { python3 -c "
w = '$wan_window'.lower(); m = {'k': 1 << 10, 'm': 1 << 20, 'g': 1 << 30}
b = int(w[:-1]) * m[w[-1]] if w[-1] in m else int(w)
print(f'{$1 * 1048576 / (b / ($wan_rtt / 1000)):.1f}')"; }

# the relay in front of the bench registry (its port survives registry_fresh)
wan_relay_start() {
  "$WAN_RELAY_BIN" --upstream "$REG" --rtt-ms "$wan_rtt" --window "$wan_window" --mbit "$wan_mbit" \
    > "$WORK/wan-relay.out" &
  WAN_RELAY_PID=$!
  for _ in $(seq 1 100); do [ -s "$WORK/wan-relay.out" ] && break; sleep 0.05; done
  WAN=$(head -1 "$WORK/wan-relay.out")
  export WAN
}
wan_relay_stop() { [ -n "${WAN_RELAY_PID:-}" ] && kill "$WAN_RELAY_PID" 2>/dev/null; wait "$WAN_RELAY_PID" 2>/dev/null || true; }

# wan_kill_half DST: start the pull into DST, SIGKILL it once half the blob is written
# (per the partial state), leaving the partial files for the timed re-run.
wan_kill_half() {
  local dst=$1 pid half
  rm -rf "$dst"
  $HQ --insecure-registry "$WAN" pull "$WAN/bench/wan-big:v1" "$dst:v1" >/dev/null 2>&1 &
  pid=$!
  half=$((WAN_PULL_MIB * 1048576 / 2))
  while kill -0 "$pid" 2>/dev/null; do
    [ "$(python3 -c "
import glob, json
t = 0
for p in glob.glob('$dst/.hoist/partial/*.state'):
    try: t += sum(json.load(open(p))['written'].values())
    except Exception: pass
print(t)")" -ge "$half" ] && break
    sleep 0.05
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
WAN_PULL_MIB=$wan_pull_mib
export WAN_PULL_MIB HQ
export -f wan_kill_half

log "wan: RTT ${wan_rtt} ms, ${wan_window} in flight per connection, ${wan_mbit} Mbit/s; pull ${wan_pull_mib} MiB, push ${wan_push_mib} MiB in ${wan_layers} layers (data cached in $DATA)"
wan_layout "$DATA/wan-pull" "$wan_pull_mib"
wan_push_sizes=()
for _ in $(seq 1 "$wan_layers"); do wan_push_sizes+=($((wan_push_mib / wan_layers))); done
wan_layout "$DATA/wan-push" "${wan_push_sizes[@]}"
wan_push_total=$((wan_push_mib / wan_layers * wan_layers))

registry_fresh
wan_relay_start
$HQ --insecure-registry "$REG" push "$DATA/wan-pull:v1" "$REG/bench/wan-big:v1" >/dev/null
have_sk=1; command -v skopeo >/dev/null || { have_sk=0; log "SKIP wan skopeo rows: no skopeo"; }

lim=$(wan_limit "$wan_pull_mib")
queue wan-pull "hoist (lanes) [link limit ${lim} s]" "rm -rf $OUT/wan" \
  "$HQ --insecure-registry $WAN pull $WAN/bench/wan-big:v1 $OUT/wan:v1"
queue wan-pull "one connection: hoist --lanes 1 [limit $(wan_one_conn "$wan_pull_mib") s]" "rm -rf $OUT/wan" \
  "$HQ --insecure-registry $WAN --lanes 1 pull $WAN/bench/wan-big:v1 $OUT/wan:v1"
[ "$have_sk" = 1 ] && queue wan-pull "skopeo [link limit ${lim} s]" "rm -rf $OUT/wan" \
  "$SK copy -q --preserve-digests --src-tls-verify=false docker://$WAN/bench/wan-big:v1 oci:$OUT/wan:v1"
measure_queued

half=$(wan_limit $((wan_pull_mib / 2)))
queue wan-resume "hoist resumed after kill -9 at 50% [link limit ${half} s]" "wan_kill_half $OUT/wan" \
  "$HQ --insecure-registry $WAN pull $WAN/bench/wan-big:v1 $OUT/wan:v1"
queue wan-resume "fresh pull: hoist [link limit ${lim} s]" "rm -rf $OUT/wan" \
  "$HQ --insecure-registry $WAN pull $WAN/bench/wan-big:v1 $OUT/wan:v1"
measure_queued
# the last resumed pull is checked untimed (hoist verified the digest already; fsck hashes again)
wan_kill_half "$OUT/wan"
$HQ --insecure-registry "$WAN" pull "$WAN/bench/wan-big:v1" "$OUT/wan:v1" >/dev/null &&
  $HOIST layout fsck "$OUT/wan" >/dev/null 2>&1 && log "wan-resume: fsck after the resumed pull: clean" ||
  log "wan-resume: fsck after the resumed pull FAILED"
rm -rf "$OUT/wan"

lim=$(wan_limit "$wan_push_total")
queue wan-push "hoist [link limit ${lim} s]" "registry_fresh" \
  "$HQ --insecure-registry $WAN push $DATA/wan-push:v1 $WAN/bench/wan-h:v1"
[ "$have_sk" = 1 ] && queue wan-push "skopeo [link limit ${lim} s]" "registry_fresh" \
  "$SK copy -q --preserve-digests --dest-tls-verify=false oci:$DATA/wan-push:v1 docker://$WAN/bench/wan-s:v1"
queue wan-push "registry ceiling: hoist without the relay" "registry_fresh" \
  "$HQ --insecure-registry $REG push $DATA/wan-push:v1 $REG/bench/wan-d:v1"
measure_queued

wan_relay_stop
