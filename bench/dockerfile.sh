#!/usr/bin/env bash
# Dockerfile build benchmark: hoist build vs buildah build (vfs storage, runc, chroot
# isolation), cold (fresh store) and cached (second build of the same context).
# A 3-stage Dockerfile: busybox tools (RUN --install), a stage that COPYs an N-file tree and
# RUNs over it, a final stage COPY --from the others. Needs root, busybox-static, buildah, runc.
#
#   bench/dockerfile.sh [FILES=20000] [RUNS=3]
#   HOIST=target/release/hoist bench/dockerfile.sh 20000 3
set -euo pipefail
N=${1:-20000}
RUNS=${2:-3}
cd "$(dirname "$0")/.."
HOIST=${HOIST:-target/release/hoist}
if [ ! -x "$HOIST" ]; then
  cargo build --release --locked -q
fi
HOIST=$(realpath "$HOIST")
work=$(mktemp -d /var/tmp/hoist-df-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
ctx=$work/ctx
mkdir -p "$ctx/tree"
cp /bin/busybox "$ctx/busybox"
# N small files in 100 directories
python3 - "$ctx/tree" "$N" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i % 100:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06d}.txt"), "w") as f:
        f.write(f"file {i}\n" * (1 + i % 20))
PY
cat > "$ctx/Dockerfile" <<'DF'
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

now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc; }
declare -A total
run_case() { # name command...
  local name=$1; shift
  local t0; t0=$(now)
  "$@" >/dev/null 2>"$work/last.err" || { cat "$work/last.err" >&2; exit 1; }
  local e; e=$(elapsed "$t0")
  total[$name]="${total[$name]:-} $e"
}
for r in $(seq "$RUNS"); do
  rm -rf "$work/hstore" "$work/broot" "$work/brun"
  run_case "hoist cold" "$HOIST" build --store "$work/hstore" -t bench:latest "$ctx"
  run_case "hoist cached" "$HOIST" build --store "$work/hstore" -t bench:latest "$ctx"
  B=(buildah --root "$work/broot" --runroot "$work/brun" --storage-driver vfs)
  run_case "buildah cold" "${B[@]}" build --layers --isolation chroot --runtime runc -t bench "$ctx"
  run_case "buildah cached" "${B[@]}" build --layers --isolation chroot --runtime runc -t bench "$ctx"
  "${B[@]}" rmi -a -f >/dev/null 2>&1 || true
done
echo "Dockerfile build, $N files, $RUNS runs (wall seconds, median of runs)"
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for k in "hoist cold" "buildah cold" "hoist cached" "buildah cached"; do
  printf '%-16s %s   (runs:%s)\n' "$k" "$(echo "${total[$k]}" | median)" "${total[$k]}"
done
hc=$(echo "${total[hoist cold]}" | median); bc_=$(echo "${total[buildah cold]}" | median)
echo "cold ratio hoist/buildah: $(echo "scale=2; $hc / $bc_" | bc)"
