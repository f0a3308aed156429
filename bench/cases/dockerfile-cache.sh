# shellcheck shell=bash
# Case dockerfile-cache (sourced by bench/run.sh): the build cache shared through a registry.
# The 3-stage Dockerfile of case dockerfile (busybox tools, a stage that COPYs and RUNs over
# the $FILES-file tree, a final stage COPY --from both):
#   dockerfile-cache-cold:  a fresh store builds and exports `--cache-to type=registry,mode=max`
#                           (and pushes the image), against a cold `buildah build` (goal <= 0.7x);
#   dockerfile-cache-warm:  another fresh store builds with `--cache-from type=registry` (no RUN
#                           runs), against `hoist pull` of the image it makes (goal <= 1.5x).
# Needs root, buildah, runc and busybox-static (/bin/busybox); skips without them.
dc_missing=""
for t in buildah runc; do command -v "$t" >/dev/null || dc_missing="$dc_missing $t"; done
[ -x /bin/busybox ] || dc_missing="$dc_missing busybox-static"
[ "$(id -u)" = 0 ] || dc_missing="$dc_missing root"
if [ -n "$dc_missing" ]; then
  log "SKIP dockerfile-cache: needs$dc_missing"
else
  registry_fresh
  DCCTX=$WORK/dc-ctx
  if [ ! -f "$DCCTX/.files-$FILES" ]; then
    rm -rf "$DCCTX" && mkdir -p "$DCCTX"
    cp -a "$DATA/tree" "$DCCTX/tree"
    touch "$DCCTX/.files-$FILES"
  fi
  cp /bin/busybox "$DCCTX/busybox"
  printf '.files-*\n' > "$DCCTX/.dockerignore"
  cat > "$DCCTX/Dockerfile" <<'DF'
FROM scratch AS tools
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]

FROM tools AS data
COPY tree/ /data/
RUN find /data -type f | wc -l > /count && echo built > /data/marker

FROM tools
COPY --from=data /data /data
COPY --from=data /count /count
CMD ["cat", "/count"]
DF
  DCB="buildah --root $WORK/dc-broot --runroot $WORK/dc-brun --storage-driver vfs"
  DCB_CLEAN="$DCB rmi -a -f; rm -rf $WORK/dc-broot $WORK/dc-brun"
  DC_COLD="$HQ build --store $WORK/dc-store1 -t bench:dc --cache-to type=registry,ref=$REG/bench/dc-cache:v1,mode=max -o type=registry,name=$REG/bench/dc:v1 $DCCTX"
  DC_WARM="$HQ build --store $WORK/dc-store2 -t bench:dc --cache-from type=registry,ref=$REG/bench/dc-cache:v1 $DCCTX"
  queue dockerfile-cache-cold hoist "registry_fresh; rm -rf $WORK/dc-store1" "$DC_COLD"
  queue dockerfile-cache-cold "buildah build" "$DCB_CLEAN" "$DCB build --layers --isolation chroot --runtime runc -t bench-dc $DCCTX"
  measure_queued
  queue dockerfile-cache-warm hoist "rm -rf $WORK/dc-store2" "$DC_WARM"
  queue dockerfile-cache-warm "hoist pull" "rm -rf $OUT/dc-pull" "$HQ pull $REG/bench/dc:v1 $OUT/dc-pull"
  measure_queued
  bash -c "$DCB_CLEAN" >/dev/null 2>&1 || true
  rm -rf "$WORK/dc-store1" "$WORK/dc-store2" "$OUT/dc-pull"
fi
