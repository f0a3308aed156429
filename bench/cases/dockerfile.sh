# shellcheck shell=bash
# Case dockerfile (sourced by bench/run.sh): `hoist build` vs `buildah build` (vfs storage,
# runc, chroot isolation) of a 3-stage Dockerfile: busybox tools (RUN --install), a stage
# that COPYs the $FILES-file tree ($DATA/tree) and RUNs over it, a final stage COPY --from
# both. Cold: fresh store / fresh buildah storage; cached: the same build again.
# Needs root, buildah, runc and busybox-static (/bin/busybox); skips without them.
df_missing=""
for t in buildah runc; do command -v "$t" >/dev/null || df_missing="$df_missing $t"; done
[ -x /bin/busybox ] || df_missing="$df_missing busybox-static"
[ "$(id -u)" = 0 ] || df_missing="$df_missing root"
if [ -n "$df_missing" ]; then
  log "SKIP dockerfile: needs$df_missing"
else
  DFCTX=$WORK/df-ctx
  # the context: a copy of the tree (not hard links: those would become layer hard links)
  if [ ! -f "$DFCTX/.files-$FILES" ]; then
    rm -rf "$DFCTX" && mkdir -p "$DFCTX"
    cp -a "$DATA/tree" "$DFCTX/tree"
    touch "$DFCTX/.files-$FILES"
  fi
  cp /bin/busybox "$DFCTX/busybox"
  printf '.files-*\n' > "$DFCTX/.dockerignore"
  cat > "$DFCTX/Dockerfile" <<'DF'
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
  DFB="buildah --root $WORK/df-broot --runroot $WORK/df-brun --storage-driver vfs"
  DFB_BUILD="$DFB build --layers --isolation chroot --runtime runc -t bench-df $DFCTX"
  DFB_CLEAN="$DFB rmi -a -f; rm -rf $WORK/df-broot $WORK/df-brun"
  DFH_BUILD="$HQ build --store $WORK/df-hstore -t bench:df $DFCTX"
  queue dockerfile-cold hoist "rm -rf $WORK/df-hstore" "$DFH_BUILD"
  queue dockerfile-cold "buildah build" "$DFB_CLEAN" "$DFB_BUILD"
  measure_queued
  # both stores hold the last cold build now
  queue dockerfile-cached hoist "" "$DFH_BUILD"
  queue dockerfile-cached "buildah build" "" "$DFB_BUILD"
  measure_queued
  bash -c "$DFB_CLEAN" >/dev/null 2>&1 || true
  rm -rf "$WORK/df-hstore"
fi
