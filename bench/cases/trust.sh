# bench/cases/trust.sh - signature verification on pull (issue #26), sourced by bench/run.sh
# (BENCH_CASES=trust).
#
#   trust-pull  pull of the SIZE MiB bench image into a layout with --policy (a sigstoreSigned
#               requirement: the image is signed in both formats by a key hoist generated) vs
#               the same pull with --insecure-policy (no policy read). Target: <= 1.05x; the
#               policy costs one manifest GET and one small blob GET (the legacy .sig tag,
#               checked first).
#   trust-sign  `hoist sign` (both formats, the key in cosign's scrypt-encrypted format) and
#               `hoist verify` of the same image. No peer row: Debian's skopeo has sigstore
#               disabled and cosign is not installable here; the numbers show the cost of each.
#
# Needs nothing beyond hoist and the registry. Every run pulls into an empty directory.

registry_fresh
$HQ push "$DATA/img-layout:bench" "$REG/bench/trust:v1" >/dev/null
rm -f "$WORK/trust.key" "$WORK/trust.pub"
COSIGN_PASSWORD=bench $HQ key generate --out "$WORK/trust" >/dev/null
COSIGN_PASSWORD=bench $HQ sign --key "$WORK/trust.key" "$REG/bench/trust:v1" >/dev/null
# Write the push's dirty pages back before timing: otherwise the first queued command pays
# for that writeback (seen as 1.3x on the first of two one-run rows, with equal CPU).
sync
cat > "$WORK/trust-policy.json" <<POLICY
{"default": [{"type": "reject"}],
 "transports": {"docker": {"$REG/bench": [{"type": "sigstoreSigned", "keyPath": "$WORK/trust.pub",
   "signedIdentity": {"type": "matchRepository"}}]}}}
POLICY
queue trust-pull "hoist pull --policy" "rm -rf $OUT/trust-pull" \
  "$HQ pull --policy $WORK/trust-policy.json $REG/bench/trust:v1 $OUT/trust-pull"
queue trust-pull "hoist pull (no policy)" "rm -rf $OUT/trust-pull" \
  "$HQ pull --insecure-policy $REG/bench/trust:v1 $OUT/trust-pull"
measure_queued
queue trust-sign "hoist sign" "" "COSIGN_PASSWORD=bench $HQ sign --key $WORK/trust.key $REG/bench/trust:v1"
queue trust-sign "hoist verify" "" "$HQ verify --key $WORK/trust.pub $REG/bench/trust:v1"
measure_queued
rm -rf "$OUT/trust-pull"
