#!/usr/bin/env bash
# Install (or uninstall) hycan-daemon, the hycan CLI and library, and their system files.
#
#   sudo bash deploy/install.sh                 # install under /usr/local, start
#   sudo bash deploy/install.sh --uninstall     # stop, remove what the install recorded
#   DESTDIR=/var/tmp/stage bash deploy/install.sh --prefix /usr   # stage only
#   bash deploy/install.sh --dry-run            # print every action, change nothing
#
# What it lays out (PREFIX=/usr/local by default; all below $DESTDIR if set):
#   $PREFIX/lib/hycan/venv/        venv: deploy/requirements-{build,daemon}.txt
#                                  (pinned, hash-checked) + the hycan wheel (--no-deps)
#   $PREFIX/bin/{hycan-daemon,hycan_daemon,hycan}  -> symlinks into the venv
#   $PREFIX/share/hycan/wheels/hycan-VERSION-py3-none-any.whl   for users' own venvs
#   SITE/hycan/, SITE/hycan-VERSION.dist-info/   the library for the system python3
#                                  (SITE: purelib of $SYSTEM_PYTHON; on Debian
#                                  /usr/local/lib/python3.11/dist-packages)
#   $PREFIX/share/doc/hycan/deployment.md
#   /etc/systemd/system/hycan-daemon.{service,socket}  (@BINDIR@ substituted)
#   /etc/sysusers.d/hycan.conf                  group hycan + system user hycan
#   /etc/modules-load.d/hycan.conf              vcan, can_raw, vxcan, can-gw at boot
#   /var/lib/hycan/install-manifest             every file, link and directory it created
# The wheel is built from a copy of the sources in a temporary directory (below
# /var/tmp, or next to DESTDIR): nothing is written into the checkout.
# Then (never with DESTDIR): installs missing tools (kmod, ...), creates user/group
# "hycan", loads vcan, and either enables hycan-daemon.socket (systemd is PID 1) or
# starts the daemon directly in the background (no systemd: containers; unsupervised),
# waiting (<= 10 s) for its ready line in /var/log/hycan-daemon.log; its pid goes to
# /run/hycan-daemon.pid.
#
# Options:
#   --prefix DIR   installation prefix (default /usr/local)
#   --dry-run      print every action, change nothing
#   --uninstall    disable/stop and remove exactly what the manifest lists, following
#                  no symlink (the user/group "hycan" and the log file are kept)
#   --no-venv      do not create/update the venv, the wheel or the system-python
#                  library (also HYCAN_INSTALL_NO_VENV=1): those of an earlier install
#                  stay as they are; with DESTDIR the bin/ links dangle until a venv exists
#   -h, --help     this text
# Environment: DESTDIR (staging root, absolute), PYTHON (interpreter for the venv,
# >= 3.11, outside /root and /home; default /usr/bin/python3, else python3 on PATH),
# SYSTEM_PYTHON (the interpreter whose purelib directory gets the library; default
# /usr/bin/python3; empty: skip that step).
set -euo pipefail
umask 022

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
system_python=${SYSTEM_PYTHON-/usr/bin/python3}

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
case "$destdir" in
'' | /*) ;;
*) die "DESTDIR must be an absolute path, got: $destdir" ;;
esac
destdir=${destdir%/}

venv=$prefix/lib/hycan/venv
bindir=$prefix/bin
docdir=$prefix/share/doc/hycan
wheeldir=$prefix/share/hycan/wheels
unitdir=/etc/systemd/system
sysusersdir=/etc/sysusers.d
modulesdir=/etc/modules-load.d
manifest=/var/lib/hycan/install-manifest
commands=(hycan-daemon hycan_daemon hycan)
units=(hycan-daemon.service hycan-daemon.socket)
# pip never reads a cache (it may be the invoking user's) and asks nothing.
pip_opts=(--disable-pip-version-check --no-input --no-cache-dir)
work=""       # this run's temporary directory (make_work), removed on exit
committed=0   # the manifest has been written for this run

# Path of an installed file as seen from here (below DESTDIR when staging).
d() { printf '%s%s' "$destdir" "$1"; }
q() { printf '%q' "$1"; }

# Print an action, then run it unless --dry-run.
run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    [ "$dry_run" = 1 ] || "$@"
}

systemd_running() { [ -z "$destdir" ] && [ -d /run/systemd/system ]; }

need_python() {
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
        die "$python is missing or older than Python 3.11 (set PYTHON=...)"
}

# deploy/manifest.py (records what the install creates, removes exactly that) run by
# the interpreter $1, for this install's root and manifest.
manifest_tool() {
    local py=$1 args=(--root "${destdir:-/}" --manifest "$manifest")
    shift
    # Outside DESTDIR, only a manifest that nobody but root could have written counts.
    [ -n "$destdir" ] || args+=(--check-owner)
    [ -z "$work" ] || args+=(--new "$work/manifest")
    "$py" "$deploy_dir/manifest.py" "${args[@]}" "$@"
}

# Print ACTION, then (unless --dry-run) run `manifest.py ARGS...`, which does it and
# records every file, link and directory it creates.
placed() {
    local action=$1
    shift
    printf '+ %s\n' "$action"
    [ "$dry_run" = 1 ] || manifest_tool "$python" "$@"
}

# install_file PART SRC DST: copy SRC to DST (mode 0644).
install_file() {
    placed "install -m 0644 $(q "$2") $(q "$(d "$3")")" install "$1" "$2" "$3"
}

# Copy a unit SRC to DST (mode 0644), substituting @BINDIR@ and @DOCDIR@.
install_unit() {
    local src=$1 dst=$2 tmp
    printf '+ install -m 0644 %q %q  # with @BINDIR@=%s @DOCDIR@=%s\n' "$src" "$(d "$dst")" "$bindir" "$docdir"
    [ "$dry_run" = 1 ] && return 0
    tmp=$work/${dst##*/}
    sed -e "s|@BINDIR@|$bindir|g" -e "s|@DOCDIR@|$docdir|g" "$src" >"$tmp"
    manifest_tool "$python" install files "$tmp" "$dst"
}

remove_file() {
    if [ -e "$1" ] || [ -L "$1" ]; then
        run rm -f "$1"
    fi
}

# The temporary directory of this run: below /var/tmp (root's own, not the host's
# /tmp), or next to DESTDIR when staging. Removed on exit; if the install fails
# half-way, what it created so far is added to the manifest first.
make_work() {
    local base=/var/tmp
    [ -z "$destdir" ] || base=$(dirname "$destdir")
    if [ "$dry_run" = 1 ]; then
        work=$base/hycan-install.XXXXXX
        return 0
    fi
    [ -z "$destdir" ] || mkdir -p "$destdir"
    work=$(mktemp -d "$base/hycan-install.XXXXXX")
    mkdir "$work/tmp"
    trap on_exit EXIT
}

on_exit() {
    local status=$?
    if [ "$status" != 0 ] && [ "$committed" = 0 ] && [ -s "$work/manifest" ]; then
        manifest_tool "$python" commit --partial ||
            warn "could not record the paths created so far in $(d "$manifest")"
    fi
    rm -rf -- "$work"
}

# apt-get install PACKAGES, refreshing the package lists once if needed.
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        warn "cannot install $* (no apt-get); install it by hand"
        return 0
    fi
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" ||
        { run apt-get update && run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; }
}

# Build prerequisites of the venv: python-prctl compiles against libcap.
ensure_build_deps() {
    local pkgs=()
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

# Every tool the steps after the file layout call (TOOL:DEBIAN-PACKAGE); a minimal
# Debian (debootstrap --variant=minbase) lacks kmod, for one.
ensure_tools() {
    local tools=(modprobe:kmod) pkgs=() t
    command -v systemd-sysusers >/dev/null 2>&1 ||
        tools+=(getent:libc-bin groupadd:passwd useradd:passwd)
    systemd_running || tools+=(setsid:util-linux nohup:coreutils)
    for t in "${tools[@]}"; do
        command -v "${t%%:*}" >/dev/null 2>&1 || pkgs+=("${t#*:}")
    done
    if [ ${#pkgs[@]} -gt 0 ]; then
        say "installing missing tools: ${pkgs[*]}"
        apt_install "${pkgs[@]}" || true
    fi
    [ "$dry_run" = 1 ] && return 0
    for t in "${tools[@]}"; do
        command -v "${t%%:*}" >/dev/null 2>&1 && continue
        case "$t" in
        modprobe:*) warn "no modprobe (Debian package kmod): vcan, can_raw, vxcan and can-gw are not loaded now" ;;
        *) die "${t%%:*} is missing: install the package ${t#*:}" ;;
        esac
    done
}

# The venv: python -m venv, the hash-pinned build requirements (setuptools), the
# hash-pinned daemon requirements (python-prctl built against them, no build
# isolation, so nothing unpinned is fetched), then the hycan wheel with --no-deps.
install_venv() {
    local v clear=() base
    v=$(d "$venv")
    ensure_build_deps
    base=$("$python" -c 'import os, sys; print(os.path.realpath(sys.executable))')
    if [ -x "$v/bin/python" ] && ! "$v/bin/python" -c \
        'import os, sys; sys.exit(os.path.realpath(sys._base_executable) != sys.argv[1])' "$base" 2>/dev/null; then
        say "the existing venv was made by another interpreter: recreating it with $base"
        clear=(--clear)
    fi
    placed "record $(q "$v") as the venv (removed as a whole on uninstall)" tree venv "$venv"
    # pip's own temporary files (the python-prctl build) go to this run's directory too.
    local -x TMPDIR=$work/tmp
    run "$python" -m venv "${clear[@]}" "$v"
    run "$v/bin/python" -m pip install "${pip_opts[@]}" --require-hashes \
        -r "$deploy_dir/requirements-build.txt"
    run "$v/bin/python" -m pip install "${pip_opts[@]}" --require-hashes \
        --no-build-isolation --use-pep517 -r "$deploy_dir/requirements-daemon.txt"
    build_wheel "$v"
    run "$v/bin/python" -m pip install "${pip_opts[@]}" --no-index --no-deps \
        --force-reinstall "$work/dist/$wheel_name"
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

# The hycan wheel, built by the venv's pip (pinned setuptools, no index) from a copy
# of the files the build reads, so that build/ and *.egg-info land in $work.
build_wheel() {
    local pip=$1/bin/python src=$work/src
    say "building $wheel_name from a copy of the sources (the checkout is not written to)"
    printf '+ copy pyproject.toml README.md src/ to %q\n' "$src"
    if [ "$dry_run" = 0 ]; then
        mkdir "$src"
        tar -C "$repo_root" --exclude=__pycache__ --exclude='*.egg-info' -cf - \
            pyproject.toml README.md src | tar -C "$src" -xf -
    fi
    run "$pip" -m pip wheel "${pip_opts[@]}" --no-index --no-deps --no-build-isolation \
        -w "$work/dist" "$src"
    [ "$dry_run" = 1 ] || [ -f "$work/dist/$wheel_name" ] ||
        die "pip wheel did not produce $work/dist/$wheel_name"
}

# The pure-Python library (no dependencies: the sync API is stdlib only) where the
# system interpreter finds it, so that every user's python3 can import hycan.
install_system_python() {
    local site
    if [ -z "$system_python" ]; then
        say "note: SYSTEM_PYTHON is empty: not installing the library for a system python"
        return 0
    fi
    if ! "$system_python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        warn "$system_python is missing or older than Python 3.11: the library is not installed for it (the wheel is in $wheeldir)"
        return 0
    fi
    site=$("$system_python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
    "$system_python" -c 'import sys; sys.exit(sys.argv[1] not in sys.path)' "$site" ||
        warn "$site is not on $system_python's sys.path: it will not find hycan there"
    printf '+ unpack %q into %q (byte-compiled for %s)\n' "$wheel_name" "$(d "$site")" "$system_python"
    [ "$dry_run" = 1 ] ||
        manifest_tool "$system_python" extract-wheel python "$work/dist/$wheel_name" "$site"
}

install_files() {
    local c u
    for c in "${commands[@]}"; do
        placed "ln -sfn $(q "$venv/bin/$c") $(q "$(d "$bindir/$c")")" \
            link files "$venv/bin/$c" "$bindir/$c"
    done
    for u in "${units[@]}"; do
        install_unit "$deploy_dir/systemd/$u" "$unitdir/$u"
    done
    install_file files "$deploy_dir/sysusers.d/hycan.conf" "$sysusersdir/hycan.conf"
    install_file files "$deploy_dir/modules-load.d/vcan.conf" "$modulesdir/hycan.conf"
    install_file files "$repo_root/docs/deployment.md" "$docdir/deployment.md"
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
    command -v modprobe >/dev/null 2>&1 || return 0 # ensure_tools warned
    run modprobe -a vcan can_raw vxcan can-gw || warn "could not load vcan/can_raw/vxcan/can-gw (not fatal)"
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
    warn "systemd is not running, so nothing supervises hycan-daemon (pid $pid): if it dies it is NOT restarted, and it does not start at boot; run 'sudo bash deploy/install.sh' again to start it"
}

do_install() {
    if [ -z "$destdir" ] && [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
        die "installing needs root (sudo bash deploy/install.sh), or set DESTDIR to stage"
    fi
    need_python
    wheel_name=hycan-$("$python" -c 'import sys, tomllib
with open(sys.argv[1], "rb") as f: print(tomllib.load(f)["project"]["version"])' "$repo_root/pyproject.toml")-py3-none-any.whl
    say "installing hycan from $repo_root, prefix $prefix${destdir:+, DESTDIR $destdir}"
    make_work
    if [ "$no_venv" = 1 ]; then
        say "note: --no-venv: the venv, the wheel and the system-python library stay as they are (bin/ links point to $venv/bin)"
        if [ -z "$destdir" ] && [ "$dry_run" = 0 ] && [ ! -x "$venv/bin/hycan-daemon" ]; then
            die "--no-venv but $venv/bin/hycan-daemon does not exist"
        fi
    else
        install_venv
        install_file wheel "$work/dist/$wheel_name" "$wheeldir/$wheel_name"
        install_system_python
    fi
    install_files
    placed "record the paths created in $(q "$(d "$manifest")") (and remove an earlier install's that are gone)" commit
    committed=1
    if [ -n "$destdir" ]; then
        say "DESTDIR is set: not creating users, loading modules, enabling or starting anything"
        return 0
    fi
    ensure_tools
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

# What install.sh wrote before it kept a manifest (hycan 0.1.0 up to the manifest's
# introduction), as manifest entries: removed just as carefully.
legacy_entries() {
    local c u
    for c in "${commands[@]}"; do
        printf 'files\tlink\t%s\t%s\n' "$bindir/$c" "$venv/bin/$c"
    done
    for u in "${units[@]}"; do
        printf 'files\tfile\t%s\n' "$unitdir/$u"
    done
    printf 'files\tfile\t%s\n' "$sysusersdir/hycan.conf" "$modulesdir/hycan.conf" \
        "$docdir/deployment.md"
    printf 'files\tdir\t%s\n' "$docdir" "$prefix/lib/hycan"
    printf 'venv\ttree\t%s\n' "$venv"
}

do_uninstall() {
    local dry=()
    if [ -z "$destdir" ] && [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
        die "uninstalling needs root (sudo bash deploy/install.sh --uninstall)"
    fi
    need_python
    [ "$dry_run" = 0 ] || dry=(--dry-run)
    say "uninstalling hycan${destdir:+ from DESTDIR $destdir}"
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
    if [ -e "$(d "$manifest")" ] || [ -L "$(d "$manifest")" ]; then
        say "removing exactly what $(d "$manifest") lists, following no symlink"
        manifest_tool "$python" remove "${dry[@]}"
    else
        say "no $(d "$manifest") (nothing installed, or installed by an install.sh from before the manifest): removing what those laid out under --prefix $prefix, where it is still what they made, following no symlink"
        legacy_entries | manifest_tool "$python" remove "${dry[@]}" --entries -
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
