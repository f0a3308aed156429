#!/usr/bin/env bash
# bench/registry.sh - the benchmark's own registry: CNCF distribution (Debian `docker-registry`)
# on 127.0.0.1, filesystem storage under DIR/data, errors-only log, no access log.
#
#   bench/registry.sh start DIR [PORT]      # plain HTTP; prints REG=127.0.0.1:PORT (eval-able)
#   bench/registry.sh start-tls DIR [PORT]  # HTTPS; also prints CA=DIR/tls/ca.pem and
#                                           # CERTDIR=DIR/certs.d (for skopeo --*-cert-dir)
#   bench/registry.sh stop DIR              # stops the registry started with DIR
#
# Without PORT a free one is picked. Not for tests: they start theirs from
# crates/hoist-testkit/src/registry.rs (auth, token servers, access log).
set -euo pipefail

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { sed -n '2,11p' "$0" >&2; exit 2; }
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

# A throwaway CA and a leaf certificate it signs for 127.0.0.1 (rustls refuses a CA
# certificate presented as the server's own).
make_certs() {
  local t=$dir/tls
  [ -f "$t/cert.pem" ] && return 0
  mkdir -p "$t" "$dir/certs.d"
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 7 -subj /CN=hoist-bench-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
    -keyout "$t/ca.key" -out "$t/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -sha256 -subj /CN=127.0.0.1 \
    -keyout "$t/key.pem" -out "$t/leaf.csr" 2>/dev/null
  printf '%s\n' subjectAltName=IP:127.0.0.1,DNS:localhost basicConstraints=CA:FALSE \
    extendedKeyUsage=serverAuth > "$t/leaf.ext"
  openssl x509 -req -in "$t/leaf.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial -days 7 \
    -sha256 -extfile "$t/leaf.ext" -out "$t/cert.pem" 2>/dev/null
  cp "$t/ca.pem" "$dir/certs.d/ca.crt"
}

case "$cmd" in
  stop) stop; exit 0;;
  start) scheme=http;;
  start-tls) scheme=https; make_certs;;
  *) echo "unknown command: $cmd" >&2; exit 2;;
esac

stop
port=${3:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
mkdir -p "$dir/data"
secret=bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
sed -e "s|@LEVEL@|error|; s|@ACCESSLOG_OFF@|true|; s|@DATA@|$dir/data|; s|@PORT@|$port|; s|@SECRET@|$secret|" \
  "$(dirname "$0")/../crates/hoist-testkit/src/registry-config.yml" > "$dir/config.yml"
if [ $scheme = https ]; then
  printf '  tls:\n    certificate: %s\n    key: %s\n' "$dir/tls/cert.pem" "$dir/tls/key.pem" >> "$dir/config.yml"
fi

setsid docker-registry serve "$dir/config.yml" > "$dir/log" 2>&1 < /dev/null &
echo $! > "$dir/pid"
ping=(curl -s -o /dev/null "$scheme://127.0.0.1:$port/v2/")
[ $scheme = https ] && ping+=(--cacert "$dir/tls/ca.pem")
for _ in $(seq 1 100); do
  if "${ping[@]}"; then
    echo "REG=127.0.0.1:$port"
    [ $scheme = https ] && echo "CA=$dir/tls/ca.pem CERTDIR=$dir/certs.d"
    exit 0
  fi
  kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
  sleep 0.1
done
echo "registry did not come up on $scheme://127.0.0.1:$port; log:" >&2
cat "$dir/log" >&2
stop
exit 1
