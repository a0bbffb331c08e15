#!/usr/bin/env bash
# Install (or uninstall) hycan-daemon, the hycan CLI and their system files.
#
#   sudo bash deploy/install.sh                 # install under /usr/local, start
#   sudo bash deploy/install.sh --uninstall     # stop and remove again
#   DESTDIR=/tmp/stage bash deploy/install.sh --prefix /usr   # stage only
#   bash deploy/install.sh --dry-run            # print every action, change nothing
#
# What it lays out (PREFIX=/usr/local by default; all below $DESTDIR if set):
#   $PREFIX/lib/hycan/venv/                     virtualenv with hycan[daemon]
#   $PREFIX/bin/{hycan-daemon,hycan_daemon,hycan}  -> symlinks into the venv
#   $PREFIX/share/doc/hycan/deployment.md
#   /etc/systemd/system/hycan-daemon.{service,socket}  (@BINDIR@ substituted)
#   /etc/sysusers.d/hycan.conf                  group hycan + system user hycan
#   /etc/modules-load.d/hycan.conf              vcan, can_raw at boot
# Then (never with DESTDIR): creates user/group "hycan", loads vcan, and either
# enables hycan-daemon.socket (systemd is PID 1) or starts the daemon directly
# in the background (no systemd: containers), waiting (<= 10 s) for its ready
# line in /var/log/hycan-daemon.log; its pid goes to /run/hycan-daemon.pid.
#
# Options:
#   --prefix DIR   installation prefix (default /usr/local)
#   --dry-run      print every action, change nothing
#   --uninstall    disable/stop and remove everything install put in place
#                  (the user/group "hycan" and the log file are kept)
#   --no-venv      do not create/update the venv (also HYCAN_INSTALL_NO_VENV=1);
#                  with DESTDIR the bin/ links then dangle until a venv exists
#   -h, --help     this text
# Environment: DESTDIR (staging root), PYTHON (interpreter for the venv, >= 3.11,
# outside /root and /home; default /usr/bin/python3, else python3 on PATH).
set -euo pipefail

prog=install.sh
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deploy_dir=$repo_root/deploy

prefix=/usr/local
destdir=${DESTDIR:-}
dry_run=0
uninstall=0
no_venv=0
case "${HYCAN_INSTALL_NO_VENV:-0}" in 1 | yes | true) no_venv=1 ;; esac
# The service runs as user hycan with ProtectHome=yes: the venv's base
# interpreter must live outside /root and /home (e.g. not a pyenv build).
if [ -n "${PYTHON:-}" ]; then
    python=$PYTHON
elif [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python=/usr/bin/python3
else
    python=python3
fi

socket_path=/run/hycan_daemon.sock
pid_file=/run/hycan-daemon.pid
log_file=/var/log/hycan-daemon.log
ready_timeout=10

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
say() { printf '%s: %s\n' "$prog" "$*"; }
warn() { printf '%s: warning: %s\n' "$prog" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$prog" "$*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
    --prefix)
        [ $# -ge 2 ] || die "--prefix needs a directory"
        prefix=$2
        shift 2
        ;;
    --prefix=*)
        prefix=${1#--prefix=}
        shift
        ;;
    --dry-run) dry_run=1 && shift ;;
    --uninstall) uninstall=1 && shift ;;
    --no-venv) no_venv=1 && shift ;;
    -h | --help) usage && exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done

case "$prefix" in
/*) ;;
*) die "--prefix must be an absolute path, got: $prefix" ;;
esac
prefix=${prefix%/}
[ -n "$prefix" ] || die "--prefix must not be /"
destdir=${destdir%/}

venv=$prefix/lib/hycan/venv
bindir=$prefix/bin
docdir=$prefix/share/doc/hycan
unitdir=/etc/systemd/system
sysusersdir=/etc/sysusers.d
modulesdir=/etc/modules-load.d
commands=(hycan-daemon hycan_daemon hycan)
units=(hycan-daemon.service hycan-daemon.socket)

# Path of an installed file as seen from here (below DESTDIR when staging).
d() { printf '%s%s' "$destdir" "$1"; }

# Print an action, then run it unless --dry-run.
run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    [ "$dry_run" = 1 ] || "$@"
}

systemd_running() { [ -z "$destdir" ] && [ -d /run/systemd/system ]; }

# Copy SRC to DST (mode 0644).
install_file() {
    run install -D -m 0644 "$1" "$2"
}

# Copy a unit SRC to DST (mode 0644), substituting @BINDIR@ and @DOCDIR@.
install_unit() {
    local src=$1 dst=$2 tmp
    printf '+ install -D -m 0644 %q %q  # with @BINDIR@=%s @DOCDIR@=%s\n' "$src" "$dst" "$bindir" "$docdir"
    [ "$dry_run" = 1 ] && return 0
    tmp=$(mktemp)
    sed -e "s|@BINDIR@|$bindir|g" -e "s|@DOCDIR@|$docdir|g" "$src" >"$tmp"
    install -D -m 0644 "$tmp" "$dst"
    rm -f "$tmp"
}

remove_file() {
    if [ -e "$1" ] || [ -L "$1" ]; then
        run rm -f "$1"
    fi
}

# apt-get install PACKAGES, refreshing the package lists once if needed.
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        warn "cannot install $* (no apt-get); install it by hand if the build fails"
        return 0
    fi
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" ||
        { run apt-get update && run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; }
}

# Build prerequisites of the venv: python-prctl compiles against libcap.
ensure_build_deps() {
    local pkgs=()
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
        die "$python is missing or older than Python 3.11 (set PYTHON=...)"
    local real
    real=$("$python" -c 'import os, sys; print(os.path.realpath(sys.executable))')
    case "$real" in
    /root/* | /home/* | /run/user/*)
        if [ -z "$destdir" ]; then
            die "$python ($real) is below /root or /home: hycan-daemon.service (User=hycan, ProtectHome=yes) cannot run it; use a system Python, e.g. PYTHON=/usr/bin/python3"
        fi
        warn "$python ($real) is below /root or /home, which hycan-daemon.service (User=hycan, ProtectHome=yes) cannot run"
        ;;
    esac
    "$python" -c 'import ensurepip, venv' 2>/dev/null ||
        pkgs+=("python3-venv")
    "$python" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' ||
        pkgs+=("python3-dev")
    [ -e /usr/include/sys/capability.h ] || pkgs+=("libcap-dev")
    command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || pkgs+=("gcc")
    if [ ${#pkgs[@]} -gt 0 ]; then
        say "installing build prerequisites: ${pkgs[*]}"
        apt_install "${pkgs[@]}"
    fi
}

install_venv() {
    local v
    v=$(d "$venv")
    if [ "$no_venv" = 1 ]; then
        say "note: --no-venv: not creating $v (bin/ links point to $venv/bin)"
        if [ -z "$destdir" ] && [ "$dry_run" = 0 ] && [ ! -x "$venv/bin/hycan-daemon" ]; then
            die "--no-venv but $venv/bin/hycan-daemon does not exist"
        fi
        return 0
    fi
    ensure_build_deps
    local clear=() base
    base=$("$python" -c 'import os, sys; print(os.path.realpath(sys.executable))')
    if [ -x "$v/bin/python" ] && ! "$v/bin/python" -c \
        'import os, sys; sys.exit(os.path.realpath(sys._base_executable) != sys.argv[1])' "$base" 2>/dev/null; then
        say "the existing venv was made by another interpreter: recreating it with $base"
        clear=(--clear)
    fi
    run "$python" -m venv "${clear[@]}" "$v"
    run "$v/bin/python" -m pip install --disable-pip-version-check --no-input \
        --upgrade "${repo_root}[daemon]"
    if [ -n "$destdir" ]; then
        # A venv is not relocatable: point its scripts at the final location.
        say "DESTDIR: rewriting $v/bin scripts to refer to $venv"
        if [ "$dry_run" = 0 ]; then
            local f
            for f in "$v"/bin/*; do
                if [ -f "$f" ] && [ ! -L "$f" ] && grep -qIF -- "$v" "$f"; then
                    sed -i "s|$v|$venv|g" "$f"
                fi
            done
        fi
    fi
    if [ "$dry_run" = 0 ]; then
        local c
        for c in "${commands[@]}"; do
            [ -x "$v/bin/$c" ] || warn "the venv has no $c console script"
        done
    fi
}

install_files() {
    local c u
    run mkdir -p "$(d "$bindir")"
    for c in "${commands[@]}"; do
        run ln -sfn "$venv/bin/$c" "$(d "$bindir/$c")"
    done
    for u in "${units[@]}"; do
        install_unit "$deploy_dir/systemd/$u" "$(d "$unitdir/$u")"
    done
    install_file "$deploy_dir/sysusers.d/hycan.conf" "$(d "$sysusersdir/hycan.conf")"
    install_file "$deploy_dir/modules-load.d/vcan.conf" "$(d "$modulesdir/hycan.conf")"
    install_file "$repo_root/docs/deployment.md" "$(d "$docdir/deployment.md")"
}

create_user_group() {
    if command -v systemd-sysusers >/dev/null 2>&1; then
        run systemd-sysusers "$sysusersdir/hycan.conf"
    else
        getent group hycan >/dev/null || run groupadd --system hycan
        getent passwd hycan >/dev/null ||
            run useradd --system --gid hycan --no-create-home --home-dir / \
                --shell /usr/sbin/nologin --comment "hycan CAN link daemon" hycan
    fi
}

load_modules() {
    run modprobe -a vcan can_raw || warn "could not load vcan/can_raw (not fatal)"
}

# The pid in $pid_file if it is a running hycan daemon, else nothing.
fallback_pid() {
    local pid
    [ -f "$pid_file" ] || return 0
    pid=$(cat "$pid_file" 2>/dev/null || true)
    case "$pid" in '' | *[!0-9]*) return 0 ;; esac
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q hycan; then
        printf '%s\n' "$pid"
    fi
}

stop_fallback_daemon() {
    local pid i
    pid=$(fallback_pid)
    if [ -n "$pid" ]; then
        say "stopping hycan-daemon (pid $pid)"
        run kill -TERM "$pid"
        if [ "$dry_run" = 0 ]; then
            for ((i = 0; i < ready_timeout * 10; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$pid" 2>/dev/null; then
                warn "pid $pid did not exit within ${ready_timeout}s, killing it"
                run kill -KILL "$pid" || true
            fi
        fi
    fi
    remove_file "$pid_file"
}

start_fallback_daemon() {
    local pid i start_size=0 started=0
    stop_fallback_daemon
    [ -f "$log_file" ] && start_size=$(stat -c %s "$log_file")
    printf '+ setsid nohup %q --backend netlink --socket %q --group hycan >>%q 2>&1 & echo $! >%q\n' \
        "$bindir/hycan-daemon" "$socket_path" "$log_file" "$pid_file"
    [ "$dry_run" = 1 ] && return 0
    mkdir -p "$(dirname "$log_file")"
    # Not a process group leader here, so setsid execs without forking and
    # $! is the daemon's own pid.
    PYTHONUNBUFFERED=1 setsid nohup "$bindir/hycan-daemon" --backend netlink \
        --socket "$socket_path" --group hycan >>"$log_file" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$pid_file"
    for ((i = 0; i < ready_timeout * 10; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$log_file" >&2 || true
            rm -f "$pid_file"
            die "hycan-daemon exited during start-up (log: $log_file)"
        fi
        # Its ready line: "hycan-daemon X.Y: serving on PATH (...)". (A connect()
        # probe would succeed as soon as the socket listens, before the daemon
        # has dropped its privileges and serves.)
        if tail -c "+$((start_size + 1))" "$log_file" | grep -qiE 'serving on|ready'; then
            started=1
            break
        fi
        sleep 0.1
    done
    if [ "$started" = 0 ]; then
        tail -n 20 "$log_file" >&2 || true
        die "hycan-daemon (pid $pid) did not serve on $socket_path within ${ready_timeout}s"
    fi
    say "hycan-daemon is serving on $socket_path (pid $pid, log $log_file)"
    say "systemd is not running: the daemon is not restarted on failure or at boot;"
    say "re-run this script (or the command above) to start it again"
}

do_install() {
    if [ -z "$destdir" ] && [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
        die "installing needs root (sudo bash deploy/install.sh), or set DESTDIR to stage"
    fi
    say "installing hycan from $repo_root, prefix $prefix${destdir:+, DESTDIR $destdir}"
    install_venv
    install_files
    if [ -n "$destdir" ]; then
        say "DESTDIR is set: not creating users, loading modules, enabling or starting anything"
        return 0
    fi
    create_user_group
    load_modules
    if systemd_running; then
        stop_fallback_daemon
        run systemctl daemon-reload
        run systemctl enable --now hycan-daemon.socket
        # Pick up new code if the service was already running.
        run systemctl try-restart hycan-daemon.service
        say "hycan-daemon.socket is listening on $socket_path (the service starts on demand)"
    else
        say "systemd is not PID 1: starting hycan-daemon directly"
        start_fallback_daemon
    fi
    say "add users to group hycan to let them use it: usermod -aG hycan USER"
}

do_uninstall() {
    local c u
    if [ -z "$destdir" ] && [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
        die "uninstalling needs root (sudo bash deploy/install.sh --uninstall)"
    fi
    say "uninstalling hycan from prefix $prefix${destdir:+, DESTDIR $destdir}"
    if [ -z "$destdir" ]; then
        if systemd_running; then
            if [ -e "$unitdir/hycan-daemon.socket" ] || [ -e "$unitdir/hycan-daemon.service" ]; then
                run systemctl disable --now hycan-daemon.socket hycan-daemon.service || true
            else
                run systemctl stop hycan-daemon.socket hycan-daemon.service 2>/dev/null || true
            fi
        fi
        stop_fallback_daemon
    fi
    for c in "${commands[@]}"; do
        # Only our own links, not an unrelated program of the same name.
        if [ -L "$(d "$bindir/$c")" ] && [ "$(readlink "$(d "$bindir/$c")")" = "$venv/bin/$c" ]; then
            run rm -f "$(d "$bindir/$c")"
        fi
    done
    for u in "${units[@]}"; do
        remove_file "$(d "$unitdir/$u")"
    done
    remove_file "$(d "$sysusersdir/hycan.conf")"
    remove_file "$(d "$modulesdir/hycan.conf")"
    remove_file "$(d "$docdir/deployment.md")"
    if [ -d "$(d "$docdir")" ]; then
        run rmdir --ignore-fail-on-non-empty "$(d "$docdir")"
    fi
    if [ -d "$(d "$venv")" ]; then
        run rm -rf "$(d "$venv")"
    fi
    if [ -d "$(d "$prefix/lib/hycan")" ]; then
        run rmdir --ignore-fail-on-non-empty "$(d "$prefix/lib/hycan")"
    fi
    if [ -z "$destdir" ]; then
        if systemd_running; then
            run systemctl daemon-reload
        elif [ -S "$socket_path" ] && [ -z "$(fallback_pid)" ]; then
            # Left behind by a daemon that did not shut down cleanly.
            run rm -f "$socket_path"
        fi
        say "kept: user and group 'hycan' (remove with: userdel hycan; groupdel hycan)"
        if [ -e "$log_file" ]; then
            say "kept: $log_file"
        fi
    fi
    say "uninstalled"
}

[ "$dry_run" = 1 ] && say "dry run: printing actions only, nothing is changed"
if [ "$uninstall" = 1 ]; then
    do_uninstall
else
    do_install
fi
