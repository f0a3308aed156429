# bench/cases/sbom.sh - an SBOM of a big image vs pulling it (issue #27), sourced by bench/run.sh
# (BENCH_CASES=sbom).
#
#   sbom-vs-pull  `hoist --format spdx-json sbom` of the SIZE MiB bench image (one layer of
#                 /usr/lib and /usr/share files: Python dist-info, copyright files, ELF
#                 binaries searched for Go build info, every file hashed with SHA-1 for SPDX)
#                 from the registry vs `hoist pull` of it into an empty layout. Target: sbom
#                 < pull (the scan reads each layer once as a stream and writes nothing).
#
# Needs nothing beyond hoist and the registry.

registry_fresh
$HQ push "$DATA/img-layout:bench" "$REG/bench/sbom:v1" >/dev/null
# Write the push's dirty pages back before timing: otherwise the first queued command pays
# for that writeback (seen as 1.3x on the first of two one-run rows, with equal CPU).
sync
queue sbom-vs-pull "hoist sbom" "" "$HQ --format spdx-json sbom $REG/bench/sbom:v1 > /dev/null"
queue sbom-vs-pull "hoist pull" "rm -rf $OUT/sbom-pull" "$HQ pull $REG/bench/sbom:v1 $OUT/sbom-pull"
measure_queued
rm -rf "$OUT/sbom-pull"
