# Sourced by the example checks: one throwaway docker-registry (CNCF distribution) on
# 127.0.0.1, port 5000 or the next free one. Sets `port` and `R` (localhost:PORT);
# `registry_start DIR` serves DIR's data (DIR/data, config and log beside it) and returns once
# it answers; `registry_stop` stops it (also run on exit by the caller's trap).
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port=5000
while ! port_free "$port"; do port=$((port + 1)); done
R="localhost:$port"
reg_pid=""
registry_bin=$(command -v docker-registry || command -v registry || true)
if [ -z "$registry_bin" ]; then
  echo "$(basename "$0"): docker-registry not found" >&2
  exit 1
fi

registry_start() {
  local dir="$1"
  mkdir -p "$dir"
  cat > "$dir/config.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $dir/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port}
YML
  "$registry_bin" serve "$dir/config.yml" > "$dir/log" 2>&1 &
  reg_pid=$!
  for _ in $(seq 1 200); do
    if ! port_free "$port"; then return 0; fi
    if ! kill -0 "$reg_pid" 2>/dev/null; then break; fi
    sleep 0.05
  done
  cat "$dir/log" >&2
  echo "$(basename "$0"): the registry did not start on $R" >&2
  return 1
}

registry_stop() {
  if [ -n "$reg_pid" ]; then
    kill "$reg_pid" 2>/dev/null || true
    wait "$reg_pid" 2>/dev/null || true
    reg_pid=""
  fi
}
