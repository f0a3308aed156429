#!/usr/bin/env bash
# bench/registry.sh - the benchmark's own registry: CNCF distribution (Debian `docker-registry`)
# on 127.0.0.1, plain HTTP, filesystem storage under DIR/data, errors-only log, no access log.
#
#   bench/registry.sh start DIR [PORT]   # prints REG=127.0.0.1:PORT (eval-able); free port if none
#   bench/registry.sh stop DIR           # stops the registry started with DIR
#
# Not for tests: they start theirs from tests/common/registry.rs (auth, TLS, access log).
set -euo pipefail

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { sed -n '2,7p' "$0" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

stop() {
  [ -f "$dir/pid" ] || return 0
  local pid
  pid=$(cat "$dir/pid")
  # only the process we started: its command line names our config
  if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "serve $dir/config.yml"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/pid"
}

case "$cmd" in
  stop) stop; exit 0;;
  start) ;;
  *) echo "unknown command: $cmd" >&2; exit 2;;
esac

stop
port=${3:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
mkdir -p "$dir/data"
cat > "$dir/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
EOF
setsid docker-registry serve "$dir/config.yml" > "$dir/log" 2>&1 < /dev/null &
echo $! > "$dir/pid"
for _ in $(seq 1 100); do
  if curl -s -o /dev/null "http://127.0.0.1:$port/v2/"; then
    echo "REG=127.0.0.1:$port"
    exit 0
  fi
  kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
  sleep 0.1
done
echo "registry did not come up on 127.0.0.1:$port; log:" >&2
cat "$dir/log" >&2
stop
exit 1
