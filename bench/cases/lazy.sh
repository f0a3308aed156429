# bench/cases/lazy.sh - case "lazy" of bench/run.sh (sourced there; see its helpers).
# eStargz conversion of the bench image's one $SIZE MiB many-file layer (sys.tar, uncompressed)
# against recompressing the same layer to plain gzip, both through `hoist copy --dest-compress`:
#   hoist gzip                     --dest-compress gzip      (the 1.3x budget's reference)
#   hoist estargz                  --dest-compress estargz   (per-chunk gzip members + TOC)
#   hoist zstd                     --dest-compress zstd      (zstd:chunked's reference)
#   hoist zstd:chunked             --dest-compress zstd:chunked (per-file zstd frames + TOC + tar-split)
#   skopeo zstd:chunked            skopeo copy --dest-compress-format zstd:chunked (containers/image's
#                                  writer, when this skopeo knows the format)
#   stargz-snapshotter estargz.Build (Go, what nerdctl/ctr-remote run; when golang-go and
#                                  golang-github-containerd-stargz-snapshotter-dev are installed)
#
#   BENCH_CASES=lazy BENCH_RUNS=3 bench/run.sh

lazy_case() {
  local src="oci:$DATA/img-layout:bench"
  queue estargz "hoist gzip" "rm -rf $OUT/lz-gz" "$HQ copy --dest-compress gzip $src oci:$OUT/lz-gz:v1"
  queue estargz "hoist estargz" "rm -rf $OUT/lz-esgz" "$HQ copy --dest-compress estargz $src oci:$OUT/lz-esgz:v1"
  queue zstdchunked "hoist zstd" "rm -rf $OUT/lz-zst" "$HQ copy --dest-compress zstd $src oci:$OUT/lz-zst:v1"
  queue zstdchunked "hoist zstd:chunked" "rm -rf $OUT/lz-zc" "$HQ copy --dest-compress zstd:chunked $src oci:$OUT/lz-zc:v1"
  if command -v skopeo >/dev/null && skopeo copy --help 2>&1 | grep -q dest-compress-format; then
    queue zstdchunked "skopeo zstd:chunked" "rm -rf $OUT/lz-sk" \
      "skopeo copy -q --dest-compress --dest-compress-format zstd:chunked $src oci:$OUT/lz-sk:v1"
  fi
  local gopath=$ROOT/crates/hoist-testkit/go checker=$WORK/hoist-estargz-check
  if command -v go >/dev/null && [ -d /usr/share/gocode/src/github.com/containerd/stargz-snapshotter/estargz ] &&
    GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOCACHE=$WORK/go-cache go build -o "$checker" hoist-estargz-check; then
    queue estargz "stargz-snapshotter estargz.Build (Go)" "rm -f $OUT/lz.esgz" "$checker build $DATA/sys.tar $OUT/lz.esgz"
  else
    log "SKIP estargz Go peer: golang-go or the stargz-snapshotter Go sources missing"
  fi
  measure_queued
  rm -rf "$OUT/lz-gz" "$OUT/lz-esgz" "$OUT/lz.esgz" "$OUT/lz-zst" "$OUT/lz-zc" "$OUT/lz-sk"
}
lazy_case
