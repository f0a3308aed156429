# bench/cases/sync_scale.sh - a sync of a layout with many tags in bounded memory (issue 28),
# a case of bench/run.sh:
#
#   BENCH_CASES=sync_scale BENCH_RUNS=1 bench/run.sh
#
# The source is an OCI layout of BENCH_SCALE_TAGS (100000) tags, each a small distinct
# manifest (an annotation tells them apart) over one shared config and layer. The rows:
#   sync-scale        hoist sync --src dir --dest dir into a new layout. Target: peak RSS
#                     <= 256 MiB, time linear in the tags (compare with BENCH_SCALE_TAGS=25000).
#   sync-scale-noop   the same again into the full layout: every image unchanged.
# skopeo sync cannot take part: its `dir` transport is skopeo's own directory format, not an
# OCI layout, and it has no OCI layout source for sync.
# A row over BENCH_SCALE_MAX_RSS_MIB (256) peak RSS is logged as over the target, and a
# `sync-scale-rss` FAIL row goes into the results.
# Env: BENCH_SCALE_TAGS (100000), BENCH_SCALE_MAX_RSS_MIB (256). Sourced by run.sh: uses
# queue/measure_queued, $HQ, $DATA, $WORK, $OUT, $RES.

scale_tags=${BENCH_SCALE_TAGS:-100000}
scale_max=${BENCH_SCALE_MAX_RSS_MIB:-256}

# a layout of N tags t000000..., cached while N matches
scale_layout() {
  local dir=$1 n=$2
  [ -f "$dir/count" ] && [ "$(cat "$dir/count")" = "$n" ] && return 0
  rm -rf "$dir"
  python3 - "$dir" "$n" <<'PY'
import hashlib, json, os, sys
root, n = sys.argv[1], int(sys.argv[2])
os.makedirs(root + "/blobs/sha256", exist_ok=True)
def put(b):
    d = hashlib.sha256(b).hexdigest()
    with open(f"{root}/blobs/sha256/{d}", "wb") as f:
        f.write(b)
    return "sha256:" + d, len(b)
ld, ls = put(b"\0" * 1024)
cd, cs = put(json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [ld]}}).encode())
entries = []
for i in range(n):
    md, ms = put(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}],
        "annotations": {"n": str(i)}}).encode())
    entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
                    "annotations": {"org.opencontainers.image.ref.name": "t%06d" % i}})
open(root + "/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
open(root + "/index.json", "w").write(json.dumps({"schemaVersion": 2, "manifests": entries}))
PY
  echo "$n" > "$dir/count"
}

log "sync_scale: a layout of ${scale_tags} tags into a layout; peak RSS target ${scale_max} MiB"
scale_layout "$DATA/scale-src" "$scale_tags"
queue sync-scale "hoist (${scale_tags} tags)" "rm -rf $OUT/scale-dst" \
  "$HQ sync --src dir --dest dir $DATA/scale-src $OUT/scale-dst"
measure_queued
queue sync-scale-noop "hoist (${scale_tags} tags, unchanged)" "" \
  "$HQ sync --src dir --dest dir $DATA/scale-src $OUT/scale-dst"
measure_queued
# the peak RSS target: a row over it fails the case
over=$(awk -F'\t' -v max="$scale_max" '($1 == "sync-scale" || $1 == "sync-scale-noop") && ($4 == "FAIL" || $7 / 1024 > max) {print $2 " run " $3 ": " ($4 == "FAIL" ? "FAILED" : int($7 / 1024) " MiB")}' "$RES")
if [ -n "$over" ]; then
  log "sync_scale: OVER THE TARGET of ${scale_max} MiB peak RSS (or failed): $over"
  printf 'sync-scale-rss\thoist (over %s MiB)\t1\tFAIL\t0\t0\t0\n' "$scale_max" >> "$RES"
fi
rm -rf "$OUT/scale-dst"
