# bench/cases/model.sh - models (issue #17), sourced by bench/run.sh (BENCH_CASES=model).
#
#   model-push  pack the SIZE MiB model directory ($DATA/model) into the registry without a
#               store, vs one curl PUT of the weights (POST + monolithic PUT). Targets: <= 1.1x,
#               peak RSS < 64 MiB, 0 bytes written locally (write_bytes of /proc/PID/io and
#               the store directory, measured in one extra untimed run: $WORK/model-writes).
#   model-hf    pack hf://bench/model from the test hub (hoist-hfhub serving $DATA/model from
#               disk) into the registry, vs curl GET of the weights then curl PUT of them, one
#               after the other. Target: <= 1.2x.
#
# Needs: curl; builds the test hub (crates/hoist-testkit, bin hoist-hfhub) unless BENCH_NO_BUILD=1.
# Every run gets a fresh registry, so nothing is skipped as already there.

registry_fresh
MODEL_WEIGHTS=$DATA/model/model.safetensors
MODEL_DIGEST=sha256:$(sha256sum "$MODEL_WEIGHTS" | cut -d' ' -f1)
export MODEL_WEIGHTS MODEL_DIGEST

# model_curl_put REPO FILE: POST an upload, PUT FILE in one request with its digest.
model_curl_put() {
  local loc
  loc=$(curl -sf --http1.1 -X POST -D - -o /dev/null "http://$REG/v2/$1/blobs/uploads/" |
    tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
  case "$loc" in http*) ;; *) loc="http://$REG$loc";; esac
  case "$loc" in *\?*) loc="$loc&digest=$MODEL_DIGEST";; *) loc="$loc?digest=$MODEL_DIGEST";; esac
  curl -sf --http1.1 -X PUT -H 'Content-Type: application/octet-stream' -H 'Expect:' -T "$2" -o /dev/null "$loc"
}
export -f model_curl_put

# model_writes NAME CMD...: run CMD (untimed) with an empty HOIST_STORE, then record the bytes
# it caused to be written (write_bytes of this shell, which a reaped child adds to) and what
# the store holds. One line "NAME WRITE_BYTES STORE_BYTES" in $WORK/model-writes. CMD's stderr
# is read through a pipe, not redirected to a file: the file's page would count as CMD's writes.
model_writes() {
  local name=$1 store=$OUT/model-store
  shift
  rm -rf "$store"
  bash -c 'err=$(HOIST_STORE=$1 "${@:2}" 2>&1 >/dev/null) || { printf "%s\n" "$err" >&2; exit 1; }
    awk "/^write_bytes/ {print \$2}" /proc/$$/io' "$name" "$store" "$@" > "$WORK/model-writes-$name.n" ||
    { log "model: $name failed"; return 0; }
  local w s
  w=$(cat "$WORK/model-writes-$name.n")
  s=$(du -sb "$store" 2>/dev/null | cut -f1 || true)
  echo "$name ${w:-0} ${s:-0}" >> "$WORK/model-writes"
  log "model: $name wrote ${w:-0} bytes locally (write_bytes), store ${s:-0} bytes"
}

: > "$WORK/model-writes"
log "== model-push: ${SIZE} MiB model dir -> registry, no store"
queue model-push "hoist (no store)" "registry_fresh; rm -rf $OUT/model-store" \
  "HOIST_STORE=$OUT/model-store $HQ model pack $DATA/model --output type=registry,name=$REG/bench/model:v1"
queue model-push "curl POST+PUT (one upload)" "registry_fresh" "model_curl_put bench/curl $MODEL_WEIGHTS"
measure_queued
registry_fresh
model_writes model-push $HQ model pack "$DATA/model" --output "type=registry,name=$REG/bench/model:v1"

HFHUB=$ROOT/target/release/hoist-hfhub
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  log "cargo build --release -p hoist-testkit --bin hoist-hfhub"
  (cd "$ROOT" && cargo build --release --quiet -p hoist-testkit --bin hoist-hfhub)
fi
if [ ! -x "$HFHUB" ]; then
  log "SKIP model-hf: $HFHUB not built"
else
  "$HFHUB" --repo bench/model --dir "$DATA/model" > "$OUT/hfhub.out" &
  HFHUB_PID=$!
  for _ in $(seq 1 100); do [ -s "$OUT/hfhub.out" ] && break; sleep 0.1; done
  HUB=$(head -n1 "$OUT/hfhub.out")
  export HUB
  log "== model-hf: hf://bench/model (${SIZE} MiB, test hub at $HUB) -> registry"
  queue model-hf "hoist (hf://, no store)" "registry_fresh; rm -rf $OUT/model-store" \
    "HF_ENDPOINT=$HUB HOIST_STORE=$OUT/model-store $HQ model pack hf://bench/model --output type=registry,name=$REG/bench/hf:v1"
  queue model-hf "curl GET + curl PUT" "registry_fresh; rm -f $OUT/hf.bin" \
    "curl -sf -o $OUT/hf.bin $HUB/bench/model/resolve/main/model.safetensors && model_curl_put bench/curl-hf $OUT/hf.bin"
  measure_queued
  registry_fresh
  HF_ENDPOINT=$HUB model_writes model-hf $HQ model pack hf://bench/model --output "type=registry,name=$REG/bench/hf:v1"
  kill "$HFHUB_PID" 2>/dev/null || true
  wait "$HFHUB_PID" 2>/dev/null || true
  rm -f "$OUT/hf.bin"
fi
rm -rf "$OUT/model-store"
