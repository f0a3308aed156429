# bench/cases/sync.sh - registry mirroring (issue 28), a case of bench/run.sh:
#
#   BENCH_CASES=sync BENCH_RUNS=1 bench/run.sh
#
# The test kit's relay (hoist-relay, release build) sits between the clients and the bench
# registry (50 ms RTT, 2 MiB in flight per connection, 1 Gbit/s), as in the wan case. The
# source repository holds BENCH_SYNC_TAGS (200) small distinct images (one 4 KiB layer each).
#   sync-noop   re-sync of an up-to-date mirror: hoist sync (--jobs BENCH_SYNC_JOBS, 16) vs
#               skopeo sync --all; both only check. Target: hoist <= 0.05x skopeo.
#   sync-first  first sync into an empty prefix (a new prefix each run). Target: <= 0.7x.
# Env: BENCH_SYNC_TAGS (200), BENCH_SYNC_JOBS (16), BENCH_WAN_RTT_MS (50), BENCH_WAN_WINDOW (2m),
# BENCH_WAN_MBIT (1000), BENCH_RELAY_BIN (target/release/hoist-relay: another build of the
# relay, e.g. a debug one when the release build is not at hand). Sourced by run.sh: uses
# queue/measure_queued, registry_fresh, $HQ, $SK, $DATA, $WORK, $ROOT.

sync_tags=${BENCH_SYNC_TAGS:-200}
sync_jobs=${BENCH_SYNC_JOBS:-16}
sync_rtt=${BENCH_WAN_RTT_MS:-50}
sync_window=${BENCH_WAN_WINDOW:-2m}
sync_mbit=${BENCH_WAN_MBIT:-1000}

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  log "cargo build --release -p hoist-testkit --bin hoist-relay"
  (cd "$ROOT" && cargo build --release --quiet -p hoist-testkit --bin hoist-relay)
fi
SYNC_RELAY_BIN=${BENCH_RELAY_BIN:-$ROOT/target/release/hoist-relay}

# a layout of N tags t000..., one small distinct image each (cached while N matches)
sync_layout() {
  local dir=$1 n=$2
  [ -f "$dir/count" ] && [ "$(cat "$dir/count")" = "$n" ] && return 0
  rm -rf "$dir"
  python3 - "$dir" "$n" <<'EOF'
import hashlib, json, os, sys
root, n = sys.argv[1], int(sys.argv[2])
os.makedirs(root + "/blobs/sha256", exist_ok=True)
def put(b):
    d = hashlib.sha256(b).hexdigest(); open(f"{root}/blobs/sha256/{d}", "wb").write(b); return "sha256:" + d, len(b)
entries = []
for i in range(n):
    layer = os.urandom(4096)
    ld, ls = put(layer)
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"n": str(i)}},
                      "rootfs": {"type": "layers", "diff_ids": [ld]}}).encode()
    cd, cs = put(cfg)
    m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}]}).encode()
    md, ms = put(m)
    entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
                    "annotations": {"org.opencontainers.image.ref.name": "t%03d" % i}})
open(root + "/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
open(root + "/index.json", "w").write(json.dumps({"schemaVersion": 2, "manifests": entries}))
EOF
  echo "$n" > "$dir/count"
}

log "sync: ${sync_tags} tags over RTT ${sync_rtt} ms; hoist --jobs ${sync_jobs}"
sync_layout "$DATA/sync-src" "$sync_tags"
registry_fresh
"$SYNC_RELAY_BIN" --upstream "$REG" --rtt-ms "$sync_rtt" --window "$sync_window" --mbit "$sync_mbit" \
  > "$WORK/sync-relay.out" &
SYNC_RELAY_PID=$!
for _ in $(seq 1 100); do [ -s "$WORK/sync-relay.out" ] && break; sleep 0.05; done
SWAN=$(head -1 "$WORK/sync-relay.out")
export SWAN
$HQ --insecure-registry "$REG" push "$DATA/sync-src" "$REG/bench/sync-src" >/dev/null
have_sk=1; command -v skopeo >/dev/null || { have_sk=0; log "SKIP sync skopeo rows: no skopeo"; }

HS="$HQ --insecure-registry $SWAN -j $sync_jobs sync --src docker --dest docker"
# skopeo 1.9 sync has no -q (its output goes to /dev/null anyway)
SS="$SK sync --all --src docker --dest docker --src-tls-verify=false --dest-tls-verify=false"
# the mirrors the no-op rows re-check, filled once (untimed)
$HS "$SWAN/bench/sync-src" "$SWAN/noop-h" >/dev/null
if [ "$have_sk" = 1 ]; then
  $SS "$SWAN/bench/sync-src" "$SWAN/noop-s" >/dev/null 2>&1 || log "skopeo sync (untimed fill) failed"
fi

queue sync-noop "hoist (${sync_tags} tags, -j ${sync_jobs})" "" "$HS $SWAN/bench/sync-src $SWAN/noop-h"
[ "$have_sk" = 1 ] && queue sync-noop "skopeo sync (${sync_tags} tags)" "" "$SS $SWAN/bench/sync-src $SWAN/noop-s"
measure_queued

queue sync-first "hoist (${sync_tags} tags, -j ${sync_jobs})" "" \
  "$HS $SWAN/bench/sync-src $SWAN/first-h-\$RUN-\$\$"
[ "$have_sk" = 1 ] && queue sync-first "skopeo sync (${sync_tags} tags)" "" \
  "$SS $SWAN/bench/sync-src $SWAN/first-s-\$RUN-\$\$"
measure_queued

kill "$SYNC_RELAY_PID" 2>/dev/null; wait "$SYNC_RELAY_PID" 2>/dev/null || true
