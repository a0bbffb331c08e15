#!/usr/bin/env bash
# Check the hycan systemd units with the real systemd-analyze:
#   1. `systemd-analyze verify` must print nothing (it exits 0 even on
#      unknown keys, so its output is what counts);
#   2. `systemd-analyze security --offline=true` must score <= MAX_SCORE.
#
# The units contain @BINDIR@/@DOCDIR@ placeholders (filled in by install.sh),
# so they are checked as a substituted copy in a temporary directory whose
# bin/ holds an executable stub named hycan-daemon: verify then really checks
# that ExecStart= names an existing executable, and the unit text checked is
# byte for byte the one install.sh writes, apart from the paths.
#
# Usage: bash deploy/check_units.sh        (MAX_SCORE=1.5 by default)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
units_dir=${HYCAN_UNITS_DIR:-$here/systemd}
max_score=${MAX_SCORE:-1.5}

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "check_units: systemd-analyze not found (apt-get install systemd)" >&2
    exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/hycan-units.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/doc" "$work/units"
printf '#!/bin/sh\nexit 0\n' >"$work/bin/hycan-daemon"
chmod 0755 "$work/bin/hycan-daemon"
: >"$work/doc/deployment.md"

for unit in hycan-daemon.service hycan-daemon.socket; do
    sed -e "s|@BINDIR@|$work/bin|g" -e "s|@DOCDIR@|$work/doc|g" \
        "$units_dir/$unit" >"$work/units/$unit"
    if grep -n '@[A-Z_]*@' "$work/units/$unit"; then
        echo "check_units: unsubstituted placeholder left in $unit" >&2
        exit 1
    fi
done

status=0

cd "$work/units"
verify_out=$(systemd-analyze verify hycan-daemon.service hycan-daemon.socket 2>&1) || {
    echo "check_units: systemd-analyze verify exited non-zero" >&2
    status=1
}
if [ -n "$verify_out" ]; then
    echo "check_units: systemd-analyze verify printed:" >&2
    printf '%s\n' "$verify_out" >&2
    status=1
else
    echo "verify: hycan-daemon.service hycan-daemon.socket: no findings"
fi

security_out=$(systemd-analyze security --offline=true hycan-daemon.service 2>&1) || true
score_line=$(printf '%s\n' "$security_out" | grep 'Overall exposure level' || true)
if [ -z "$score_line" ]; then
    echo "check_units: no score line in systemd-analyze security output:" >&2
    printf '%s\n' "$security_out" >&2
    exit 1
fi
echo "$score_line"
score=$(printf '%s\n' "$score_line" | sed -E 's/.*: ([0-9]+(\.[0-9]+)?) .*/\1/')
if ! awk -v s="$score" -v m="$max_score" 'BEGIN { exit !(s + 0 <= m + 0) }'; then
    echo "check_units: exposure $score is above $max_score; findings:" >&2
    printf '%s\n' "$security_out" | grep -E '^(✗|-) ' >&2 || true
    status=1
fi

exit "$status"
