# bench/cases/containerd.sh - case "containerd" of bench/run.sh (sourced there; see its helpers).
# The bench image ($DATA/img-layout:bench, one $SIZE MiB layer) into containerd:
#   hoist direct                 hoist copy oci:... containerd:SOCK#bench/bench:v1 (content API, leased)
#   hoist docker-archive + ctr   hoist copy oci:... docker-archive:X.tar, then ctr images import
#   skopeo oci-archive + ctr     skopeo copy oci:... oci-archive:Y.tar, then ctr images import
# with unpack (case containerd-unpack: into the snapshotter, $CTR_SNAPSHOTTER, default overlayfs)
# and without (case containerd-content: the content store only). Every run gets a fresh
# containerd (own socket and root, CRI off) started untimed in PREP, so no run finds the
# blobs of the one before. Needs root, containerd and ctr; otherwise a SKIP line.
#
#   sudo BENCH_CASES=containerd BENCH_RUNS=1 BENCH_SIZE_MIB=256 bench/run.sh

containerd_case() {
  if [ "$(id -u)" != 0 ]; then
    log "SKIP containerd: needs root (it starts its own containerd)"
    return 0
  fi
  local t
  for t in containerd ctr; do
    command -v "$t" >/dev/null || { log "SKIP containerd: $t not installed"; return 0; }
  done
  export CTR_DIR=$WORK/containerd CTR_SOCK=$WORK/containerd/c.sock
  export CTR_SNAPSHOTTER=${CTR_SNAPSHOTTER:-overlayfs}
  # ctr_fresh: stop the last containerd, wipe its root, start a new one and wait for its socket.
  ctr_fresh() {
    ctr_stop
    rm -rf "$CTR_DIR" && mkdir -p "$CTR_DIR"
    cat > "$CTR_DIR/config.toml" <<EOF
version = 2
root = "$CTR_DIR/root"
state = "$CTR_DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CTR_SOCK"
[ttrpc]
  address = "$CTR_DIR/t.sock"
EOF
    setsid containerd --config "$CTR_DIR/config.toml" >"$CTR_DIR/log" 2>&1 < /dev/null &
    echo $! > "$WORK/containerd.pid"
    local _
    for _ in $(seq 1 100); do
      ctr --address "$CTR_SOCK" version >/dev/null 2>&1 && return 0
      sleep 0.1
    done
    log "containerd did not start: $(tail -n3 "$CTR_DIR/log")"
    return 1
  }
  # ctr_stop: the containerd this case started (by its pid file), and its mounts.
  ctr_stop() {
    local pid
    pid=$(cat "$WORK/containerd.pid" 2>/dev/null || true)
    if [ -n "$pid" ]; then
      kill "$pid" 2>/dev/null || true
      while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
      rm -f "$WORK/containerd.pid"
    fi
    grep -o "$CTR_DIR/[^ ]*" /proc/self/mounts 2>/dev/null | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  }
  export -f ctr_fresh ctr_stop
  local src="oci:$DATA/img-layout:bench" c="ctr --address $CTR_SOCK -n bench"
  local arch=$OUT/ctr-archive.tar
  local prep="ctr_fresh && rm -f $arch"
  queue containerd-unpack "hoist direct" "$prep" \
    "CONTAINERD_SNAPSHOTTER=$CTR_SNAPSHOTTER $HQ copy $src containerd:$CTR_SOCK#bench/bench:v1"
  queue containerd-unpack "hoist docker-archive + ctr import" "$prep" \
    "$HQ copy $src docker-archive:$arch:bench:v1 && $c images import --snapshotter $CTR_SNAPSHOTTER $arch"
  queue containerd-unpack "skopeo oci-archive + ctr import" "$prep" \
    "$SK --insecure-policy copy -q $src oci-archive:$arch:bench:v1 && $c images import --snapshotter $CTR_SNAPSHOTTER $arch"
  measure_queued
  queue containerd-content "hoist direct" "$prep" "$HQ copy --unpack=false $src containerd:$CTR_SOCK#bench/bench:v1"
  queue containerd-content "hoist docker-archive + ctr import" "$prep" \
    "$HQ copy $src docker-archive:$arch:bench:v1 && $c images import --no-unpack $arch"
  queue containerd-content "skopeo oci-archive + ctr import" "$prep" \
    "$SK --insecure-policy copy -q $src oci-archive:$arch:bench:v1 && $c images import --no-unpack $arch"
  measure_queued
  ctr_stop
  rm -rf "$CTR_DIR" "$arch"
}
containerd_case
