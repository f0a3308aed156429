#!/usr/bin/env bash
# bench/run.sh - hoist side by side with skopeo, umoci, coreutils and curl (the hardware ceiling).
#
#   bench/run.sh                      # full run: 1 GiB data, 5 runs per case, writes bench/RESULTS.md
#   BENCH_SIZE_MIB=128 BENCH_RUNS=1 bench/run.sh   # quick run
#
# Env: BENCH_RUNS (5), BENCH_SIZE_MIB (1024), BENCH_FILES (20000 * SIZE / 1024),
#      BENCH_CASES (all: "pack layer push pull copy tls" built in, then every bench/cases/NAME.sh:
#      model wan dockerfile containerd), BENCH_NO_BUILD=1 (skip cargo build),
#      BENCH_WORK (bench/work: data, layouts, registry),
#      BENCH_REPORT (bench/RESULTS.md: where the report goes; point it elsewhere for a partial run
#      so the full run's results stay).
# Data, layouts and the registry live in bench/work/ (gitignored); data is reused while the size matches.
# Missing Debian packages (docker-registry, skopeo, umoci, zstd, curl, time) are installed first.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
RUNS=${BENCH_RUNS:-5}
SIZE=${BENCH_SIZE_MIB:-1024}
FILES=${BENCH_FILES:-$((20000 * SIZE / 1024 > 500 ? 20000 * SIZE / 1024 : 500))}
AREA_CASES=$(cd "$HERE/cases" 2>/dev/null && ls -- *.sh 2>/dev/null | sed 's/\.sh$//' | tr '\n' ' ')
CASES=${BENCH_CASES:-pack layer push pull copy tls $AREA_CASES}
for c in $CASES; do
  case " pack layer push pull copy tls $AREA_CASES " in *" $c "*) ;; *) echo "[bench] unknown case: $c" >&2; exit 2;; esac
done
WORK=${BENCH_WORK:-$HERE/work}
DATA=$WORK/data
OUT=$WORK/out
RES=$WORK/results.tsv
REGDIR=$WORK/registry
REGISTRY_SH=$HERE/registry.sh

log() { echo "[bench] $*" >&2; }
has() { case " $CASES " in *" $1 "*) return 0;; *) return 1;; esac; }

bash "$ROOT/.ci/install-missing.sh" skopeo:skopeo umoci:umoci curl:curl zstd:zstd openssl:openssl \
  docker-registry:docker-registry /usr/bin/time:time
for t in gzip sha256sum python3 tar; do
  command -v "$t" >/dev/null || { log "missing tool: $t"; exit 1; }
done

# ---- build
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  log "cargo build --release --bin hoist"
  (cd "$ROOT" && cargo build --release --quiet --bin hoist)
fi
HOIST=$ROOT/target/release/hoist
export HOIST

# ---- data
mkdir -p "$WORK" "$OUT"
log "preparing data: ${SIZE} MiB weights, ~${SIZE} MiB system tar, ${FILES} small files (cached)"
python3 "$HERE/prepare.py" "$DATA" "$SIZE" "$FILES"
# shellcheck disable=SC1091
. "$DATA/layer.env"
TREE_MIB=$(du -sm --apparent-size "$DATA/tree" | cut -f1)
WEIGHTS=$DATA/model/model.safetensors
export DATA OUT WORK LAYER_DIGEST

# ---- page cache: every input read once, so the first timed run is as warm as the others
cat "$WEIGHTS" "$DATA/sys.tar" > /dev/null
tar -C "$DATA" -cf - tree img-layout > /dev/null

# ---- machine state
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
OTHERS=$(ps -eo pcpu=,comm= --sort=-pcpu | awk '$1 > 20 {print $2}' | sort | uniq -c | awk '{printf "%s%s(%d)", sep, $2, $1; sep=", "}')
: > "$RES"

# ---- measurement
# queue CASE TOOL PREP CMD   adds a tool to the case being measured (PREP runs untimed before each run)
# measure_queued             runs the queued tools round-robin: run 1 of every tool, then run 2, ...
#                            so slow drifts of a shared machine hit every tool alike; RUN=1..N exported
Q_CASE=() Q_TOOL=() Q_PREP=() Q_CMD=()
queue() { Q_CASE+=("$1"); Q_TOOL+=("$2"); Q_PREP+=("$3"); Q_CMD+=("$4"); }
measure_queued() {
  local i k case tool e u s m
  for i in $(seq 1 "$RUNS"); do
    export RUN=$i
    for k in "${!Q_CMD[@]}"; do
      case=${Q_CASE[$k]} tool=${Q_TOOL[$k]}
      bash -c "${Q_PREP[$k]}" >/dev/null 2>&1 || { log "prep failed: $case/$tool: ${Q_PREP[$k]}"; }
      if /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.out" bash -c "${Q_CMD[$k]}" >/dev/null 2>"$WORK/last.err"; then
        read -r e u s m < <(tail -n1 "$WORK/time.out")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$case" "$tool" "$i" "$e" "$u" "$s" "$m" >> "$RES"
        log "$case  $tool  run $i: ${e}s wall, $(awk "BEGIN{print $u + $s}")s cpu, $((m / 1024)) MiB"
      else
        printf '%s\t%s\t%s\tFAIL\t0\t0\t0\n' "$case" "$tool" "$i" >> "$RES"
        log "$case  $tool  run $i FAILED:"; tail -n5 "$WORK/last.err" >&2
      fi
    done
  done
  Q_CASE=() Q_TOOL=() Q_PREP=() Q_CMD=()
}

# ---- registry (own state dir, quiet log, 127.0.0.1)
REG_PORT=""
registry_fresh() {
  "$REGISTRY_SH" stop "$REGDIR"
  rm -rf "$REGDIR/data"
  eval "$("$REGISTRY_SH" start "$REGDIR" $REG_PORT)"
  REG_PORT=${REG##*:}
  export REG REG_PORT
}
registry_stop() { "$REGISTRY_SH" stop "$REGDIR"; "$REGISTRY_SH" stop "$REGDIR_TLS"; }
# the HTTPS one (case tls): REGS=127.0.0.1:PORT, CA (PEM), CERTDIR (skopeo)
REGDIR_TLS=$WORK/registry-tls
REGS_PORT=""
tls_registry_fresh() {
  "$REGISTRY_SH" stop "$REGDIR_TLS"
  rm -rf "$REGDIR_TLS/data"
  local REG
  eval "$("$REGISTRY_SH" start-tls "$REGDIR_TLS" $REGS_PORT)"
  REGS=$REG REGS_PORT=${REG##*:}
  export REGS REGS_PORT CA CERTDIR
}
trap registry_stop EXIT
export -f registry_fresh tls_registry_fresh registry_stop log
export REGISTRY_SH REGDIR REGDIR_TLS

# skopeo: private blob-info cache so runs do not learn from each other's registries
export SKOPEO_HOME=$WORK/skopeo-home
SK="env HOME=$SKOPEO_HOME skopeo"
export SK

# curl ceiling: POST + one monolithic PUT of the layer blob (config and manifest are noise).
# -T streams the file (--data-binary @file reads it into memory and refuses 1 GiB).
# curl_push REPO [SCHEME HOST CURL-ARGS...] (default http and $REG); HTTP/1.1 like hoist.
curl_push() {
  local repo=$1 scheme=${2:-http} host=${3:-$REG} loc
  shift $(($# < 3 ? $# : 3))
  loc=$(curl -sf --http1.1 "$@" -X POST -D - -o /dev/null "$scheme://$host/v2/$repo/blobs/uploads/" |
    tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
  case "$loc" in http*) ;; *) loc="$scheme://$host$loc";; esac
  case "$loc" in *\?*) loc="$loc&digest=$LAYER_DIGEST";; *) loc="$loc?digest=$LAYER_DIGEST";; esac
  curl -sf --http1.1 "$@" -X PUT -H 'Content-Type: application/octet-stream' -H 'Expect:' -T "$DATA/sys.tar" \
    -o /dev/null "$loc"
}
export -f curl_push

HQ="$HOIST --quiet"

if has pack; then
  log "== pack: model dir (${SIZE} MiB raw weights) into a layout"
  queue pack hoist "rm -rf $OUT/model-layout" \
    "$HQ model pack $DATA/model --name bench --tag bench --store $OUT/model-layout"
  queue pack "sha256sum (hash once)" "" "sha256sum $WEIGHTS"
  queue pack "openssl sha256 (hash once, SHA-NI)" "" "openssl dgst -sha256 $WEIGHTS"
  queue pack "tee copy | sha256sum + fsync" "rm -f $OUT/weights.copy" \
    "tee $OUT/weights.copy < $WEIGHTS | sha256sum && sync $OUT/weights.copy"
  queue pack "tar | sha256sum" "" "tar -C $DATA -cf - model | sha256sum"
  measure_queued
fi

if has layer; then
  log "== layer: image layer from ${FILES} files (${TREE_MIB} MiB)"
  # one layer holding the tree, built by the CLI into a fresh store
  printf '[[layers]]\nfiles = [{ source = "%s", target = "/" }]\n' "$DATA/tree" > "$WORK/layer.toml"
  build="$HQ build -f $WORK/layer.toml --tag bench --store $OUT/layer-layout --compression"
  for c in gzip zstd; do
    if [ $c = gzip ]; then lvl=gzip:1; else lvl=zstd:3; fi
    queue "layer-$c" "hoist ($lvl)" "rm -rf $OUT/layer-layout" "$build $lvl"
  done
  queue layer-gzip "hoist (gzip:6, default)" "rm -rf $OUT/layer-layout" "$build gzip:6"
  queue layer-gzip "tar | gzip -1" "" "tar -C $DATA/tree -cf - . | gzip -1 > $OUT/tree.tar.gz"
  queue layer-gzip "umoci insert" \
    "rm -rf $OUT/umoci && umoci init --layout $OUT/umoci && umoci new --image $OUT/umoci:bench" \
    "umoci insert --image $OUT/umoci:bench $DATA/tree /"
  queue layer-gzip "umoci repack" \
    "rm -rf $OUT/umoci $OUT/bundle && umoci init --layout $OUT/umoci && umoci new --image $OUT/umoci:bench && umoci unpack --image $OUT/umoci:bench $OUT/bundle && cp -a $DATA/tree/. $OUT/bundle/rootfs/" \
    "umoci repack --image $OUT/umoci:bench $OUT/bundle"
  queue layer-zstd "tar | zstd -3 -T0" "" "tar -C $DATA/tree -cf - . | zstd -q -3 -T0 > $OUT/tree.tar.zst"
  measure_queued
  rm -rf "$OUT/umoci" "$OUT/bundle"
fi

if has push || has pull || has copy; then
  registry_fresh
  log "registry at $REG"
fi

if has push; then
  log "== push: ${SIZE} MiB layout, cold (fresh registry each run) and warm"
  queue push-cold hoist "registry_fresh" "$HQ push $DATA/img-layout:bench $REG/bench/hoist:v1"
  queue push-cold skopeo "registry_fresh" \
    "$SK copy -q --preserve-digests --dest-tls-verify=false oci:$DATA/img-layout:bench docker://$REG/bench/skopeo:v1"
  queue push-cold "curl POST+PUT (ceiling)" "registry_fresh" "curl_push bench/curl"
  measure_queued
  # leave both images in place for warm push, pull and copy
  $HQ push "$DATA/img-layout:bench" "$REG/bench/hoist:v1" >/dev/null
  $SK copy -q --preserve-digests --dest-tls-verify=false "oci:$DATA/img-layout:bench" "docker://$REG/bench/skopeo:v1" >/dev/null
  queue push-warm hoist "" "$HQ push $DATA/img-layout:bench $REG/bench/hoist:v1"
  queue push-warm skopeo "" \
    "$SK copy -q --preserve-digests --dest-tls-verify=false oci:$DATA/img-layout:bench docker://$REG/bench/skopeo:v1"
  queue push-warm "curl HEAD (ceiling)" "" "curl -sf -I http://$REG/v2/bench/hoist/blobs/$LAYER_DIGEST"
  measure_queued
elif has pull || has copy; then
  $HQ push "$DATA/img-layout:bench" "$REG/bench/hoist:v1" >/dev/null
fi

if has pull; then
  log "== pull: registry -> layout"
  queue pull hoist "rm -rf $OUT/pull" "$HQ pull $REG/bench/hoist:v1 $OUT/pull"
  queue pull skopeo "rm -rf $OUT/pull" "$SK copy -q --preserve-digests --src-tls-verify=false docker://$REG/bench/hoist:v1 oci:$OUT/pull:v1"
  queue pull "curl GET (ceiling)" "rm -rf $OUT/pull && mkdir -p $OUT/pull" \
    "curl -sfL -o $OUT/pull/blob http://$REG/v2/bench/hoist/blobs/$LAYER_DIGEST"
  queue pull "curl GET + fsync" "rm -rf $OUT/pull && mkdir -p $OUT/pull" \
    "curl -sfL -o $OUT/pull/blob http://$REG/v2/bench/hoist/blobs/$LAYER_DIGEST && sync $OUT/pull/blob"
  measure_queued
  rm -rf "$OUT/pull"
fi

if has copy; then
  log "== copy: registry -> registry (other repo, same registry)"
  queue copy hoist "" "$HQ copy $REG/bench/hoist:v1 $REG/bench/copy-hoist-\$RUN:v1"
  queue copy skopeo "" \
    "$SK copy -q --preserve-digests --src-tls-verify=false --dest-tls-verify=false docker://$REG/bench/hoist:v1 docker://$REG/bench/copy-skopeo-\$RUN:v1"
  measure_queued
fi

if has tls; then
  log "== tls: ${SIZE} MiB over HTTPS (distribution offers h2): push cold, then pull"
  tls_registry_fresh
  HS="$HQ --ca-file $CA"
  queue push-tls "hoist (HTTP/1.1, default)" "tls_registry_fresh" "$HS push $DATA/img-layout:bench $REGS/bench/hoist:v1"
  queue push-tls "hoist --http2" "tls_registry_fresh" "$HS --http2 push $DATA/img-layout:bench $REGS/bench/hoist:v1"
  queue push-tls skopeo "tls_registry_fresh" \
    "$SK copy -q --preserve-digests --dest-cert-dir $CERTDIR oci:$DATA/img-layout:bench docker://$REGS/bench/skopeo:v1"
  queue push-tls "curl POST+PUT --http1.1 (ceiling)" "tls_registry_fresh" "curl_push bench/curl https $REGS --cacert $CA"
  measure_queued
  $HS push "$DATA/img-layout:bench" "$REGS/bench/hoist:v1" >/dev/null
  queue pull-tls "hoist (HTTP/1.1, default)" "rm -rf $OUT/pull" "$HS pull $REGS/bench/hoist:v1 $OUT/pull"
  queue pull-tls "hoist --http2" "rm -rf $OUT/pull" "$HS --http2 pull $REGS/bench/hoist:v1 $OUT/pull"
  queue pull-tls skopeo "rm -rf $OUT/pull" \
    "$SK copy -q --preserve-digests --src-cert-dir $CERTDIR docker://$REGS/bench/hoist:v1 oci:$OUT/pull:v1"
  for v in 1.1 2; do
    queue pull-tls "curl GET --http$v (ceiling)" "rm -rf $OUT/pull && mkdir -p $OUT/pull" \
      "curl -sf --http$v --cacert $CA -o $OUT/pull/blob https://$REGS/v2/bench/hoist/blobs/$LAYER_DIGEST"
  done
  measure_queued
  rm -rf "$OUT/pull"
fi

# ---- area cases: bench/cases/NAME.sh, sourced here, use queue/measure_queued, registry_fresh,
# $HQ/$HOIST, $DATA, $OUT, $WORK, $SIZE, $RUNS like the cases above, and add their titles to
# bench/report.py. Each one says in its header what it needs and skips (log SKIP ...) without it.
for c in $AREA_CASES; do
  if has "$c"; then
    log "== $c (bench/cases/$c.sh)"
    # shellcheck disable=SC1090
    . "$HERE/cases/$c.sh"
  fi
done

registry_stop
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

REPORT=${BENCH_REPORT:-$HERE/RESULTS.md}
python3 "$HERE/report.py" "$RES" "$REPORT" \
  "runs=$RUNS" "size_mib=$SIZE" "files=$FILES" "tree_mib=$TREE_MIB" \
  "load_before=$LOAD_BEFORE" "load_after=$LOAD_AFTER" "others=$OTHERS" \
  "commit=$(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet HEAD -- src || echo +dirty)"
log "wrote $REPORT"
