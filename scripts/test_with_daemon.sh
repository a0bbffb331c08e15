#!/usr/bin/env bash
# Run a command against a private hycan-daemon, then stop the daemon.
#
#   scripts/test_with_daemon.sh                         # python -m pytest -q tests
#   scripts/test_with_daemon.sh -- hycan list           # any command
#   scripts/test_with_daemon.sh --backend netlink -- python -m pytest -q tests
#
# Starts `hycan-daemon --backend memory --socket $TMP/hycan.sock --allow-uid $UID`
# in a fresh temporary directory, waits (at most $HYCAN_READY_TIMEOUT seconds,
# default 10) for its ready line, exports HYCAN_DAEMON_SOCKET, runs the command
# and exits with the command's status. On every exit path (normal, error,
# Ctrl-C, SIGTERM) the daemon is stopped and the temporary directory removed.
#
# Options:
#   --backend memory|netlink   daemon backend (default memory; netlink needs
#                              CAP_NET_ADMIN, i.e. root)
#   --netlink                  same as --backend netlink
#   --daemon-arg ARG           extra daemon argument (repeatable)
#   -h, --help                 this text
# Environment: HYCAN_DAEMON (daemon executable; default hycan-daemon on PATH,
# else "$PYTHON -m hycan.daemon.main"), PYTHON (default python3).
set -euo pipefail

prog=test_with_daemon.sh
backend=memory
daemon_args=()
timeout=${HYCAN_READY_TIMEOUT:-10}
python=${PYTHON:-python3}

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() {
    printf '%s: error: %s\n' "$prog" "$*" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
    --backend)
        [ $# -ge 2 ] || die "--backend needs memory or netlink"
        backend=$2
        shift 2
        ;;
    --backend=*)
        backend=${1#--backend=}
        shift
        ;;
    --netlink) backend=netlink && shift ;;
    --daemon-arg)
        [ $# -ge 2 ] || die "--daemon-arg needs a value"
        daemon_args+=("$2")
        shift 2
        ;;
    -h | --help) usage && exit 0 ;;
    --)
        shift
        break
        ;;
    -*) die "unknown option: $1 (see --help)" ;;
    *) break ;;
    esac
done
case "$backend" in memory | netlink) ;; *) die "--backend must be memory or netlink" ;; esac

if [ $# -gt 0 ]; then
    cmd=("$@")
else
    cmd=("$python" -m pytest -q tests)
fi

if [ -n "${HYCAN_DAEMON:-}" ]; then
    daemon=("$HYCAN_DAEMON")
elif command -v hycan-daemon >/dev/null 2>&1; then
    daemon=(hycan-daemon)
else
    daemon=("$python" -m hycan.daemon.main)
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/hycan-test.XXXXXX")
sock=$tmp/hycan.sock
daemon_pid=

# shellcheck disable=SC2317  # invoked through trap
cleanup() {
    local status=$? i
    trap - EXIT INT TERM
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 "$daemon_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$daemon_pid" 2>/dev/null; then
            printf '%s: daemon (pid %s) ignored SIGTERM for 10s, killing it\n' "$prog" "$daemon_pid" >&2
            kill -KILL "$daemon_pid" 2>/dev/null || true
        fi
        wait "$daemon_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_daemon_output() {
    printf -- '--- hycan-daemon stdout ---\n' >&2
    cat "$tmp/daemon.out" >&2 || true
    printf -- '--- hycan-daemon stderr ---\n' >&2
    cat "$tmp/daemon.err" >&2 || true
}

: >"$tmp/daemon.out"
: >"$tmp/daemon.err"
PYTHONUNBUFFERED=1 "${daemon[@]}" --backend "$backend" --socket "$sock" \
    --allow-uid "$(id -u)" "${daemon_args[@]}" \
    </dev/null >"$tmp/daemon.out" 2>"$tmp/daemon.err" &
daemon_pid=$!

# Bounded wait for the ready line ("... serving on PATH ..."); no blind sleep.
ready=0
for ((i = 0; i < timeout * 20; i++)); do
    if grep -qiE 'ready|serving on' "$tmp/daemon.out"; then
        ready=1
        break
    fi
    if ! kill -0 "$daemon_pid" 2>/dev/null; then
        wait "$daemon_pid" && rc=0 || rc=$?
        daemon_pid=
        printf '%s: hycan-daemon exited with status %s before it was ready\n' "$prog" "$rc" >&2
        show_daemon_output
        exit 1
    fi
    sleep 0.05
done
if [ "$ready" = 0 ]; then
    printf '%s: hycan-daemon printed no ready line within %ss\n' "$prog" "$timeout" >&2
    show_daemon_output
    exit 1
fi
[ -S "$sock" ] || {
    printf '%s: hycan-daemon is ready but %s is not a socket\n' "$prog" "$sock" >&2
    exit 1
}

export HYCAN_DAEMON_SOCKET=$sock
printf '%s: hycan-daemon (%s backend, pid %s) on %s; running: %s\n' \
    "$prog" "$backend" "$daemon_pid" "$sock" "${cmd[*]}" >&2
status=0
"${cmd[@]}" || status=$?
if [ "$status" != 0 ]; then
    printf '%s: command exited with status %s; daemon log follows\n' "$prog" "$status" >&2
    tail -n 50 "$tmp/daemon.err" >&2 || true
fi
exit "$status"
