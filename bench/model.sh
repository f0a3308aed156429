#!/usr/bin/env bash
# bench/model.sh - pack a model directory of SIZE_MIB (default 1024) into a registry without a
# local store, against one curl PUT of the same bytes (monolithic upload). Prints wall times,
# hoist's peak RSS and the bytes hoist wrote locally (the store must stay empty).
#
#   bench/model.sh [SIZE_MIB] [HOIST_BIN]
#
# The hf:// half of the issue's bench (test hub -> registry vs curl GET + curl PUT) is not here
# yet: the test hub (crates/hoist-testkit/src/hfhub.rs) has no binary of its own.
set -euo pipefail
size=${1:-1024}
bin=${2:-target/release/hoist}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap '"$here/registry.sh" stop "$work/reg" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
eval "$("$here/registry.sh" start "$work/reg")"
mkdir -p "$work/model"
head -c $((size << 20)) /dev/urandom > "$work/model/model.safetensors.bin"
echo '{"model_type":"bench"}' > "$work/model/config.json"
sync

# curl: one monolithic upload (POST, then PUT with the digest)
digest=sha256:$(sha256sum "$work/model/model.safetensors.bin" | cut -d' ' -f1)
t0=$(date +%s.%N)
loc=$(curl -s -D - -o /dev/null -X POST "http://$REG/v2/curl/model/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
case "$loc" in http*) ;; *) loc="http://$REG$loc";; esac
sep='?'; case "$loc" in *\?*) sep='&';; esac
curl -s -f -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$work/model/model.safetensors.bin" "$loc${sep}digest=$digest" -o /dev/null
t1=$(date +%s.%N)
curl_s=$(echo "$t1 - $t0" | bc)

# hoist: no --store, so nothing may be written under HOIST_STORE
store="$work/store"
t0=$(date +%s.%N)
/usr/bin/time -f '%M' -o "$work/rss" env HOIST_STORE="$store" "$bin" -q model pack "$work/model" \
  --output "type=registry,name=$REG/hoist/model:v1" > /dev/null
t1=$(date +%s.%N)
hoist_s=$(echo "$t1 - $t0" | bc)
written=$(du -sb "$store" 2>/dev/null | cut -f1 || true)
echo "size_mib=$size curl_put_s=$curl_s hoist_pack_s=$hoist_s ratio=$(echo "scale=2; $hoist_s / $curl_s" | bc) peak_rss_kib=$(cat "$work/rss") local_bytes_written=${written:-0}"
