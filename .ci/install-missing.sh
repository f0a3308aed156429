#!/usr/bin/env bash
# .ci/install-missing.sh COMMAND:PACKAGE ... - apt-get install the Debian PACKAGE of every COMMAND
# not on PATH (an absolute COMMAND is checked as a file). Used by .ci/run and bench/run.sh.
set -euo pipefail
need=()
for tool in "$@"; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
[ ${#need[@]} -gt 0 ] || exit 0
echo "[install-missing] installing: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
  $SUDO apt-get update >/dev/null 2>&1
  $SUDO apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
}
for tool in "$@"; do   # a package that did not bring its command is a failure too
  command -v "${tool%%:*}" >/dev/null 2>&1 || { echo "[install-missing] ${tool%%:*} still missing after installing ${tool#*:}" >&2; exit 1; }
done
