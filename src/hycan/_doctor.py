"""``hycan doctor``: what a vcan through the daemon needs on this machine, and what to fix.

Each check reads the filesystem roots and user facts of a :class:`System` (the real
machine by default), so tests can point it at a fake tree. Only a daemon that answers and a
vcan module that is loaded, built in or available are needed; anything else is a warning.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from hycan._advice import OS_RELEASE
from hycan._advice import in_container as _advice_in_container
from hycan._paths import SYSTEM_SOCKET, SocketChoice, client_socket
from hycan._sync.client import DaemonClient
from hycan._trust import SERVICE_USER
from hycan.errors import HycanError, PermissionDenied

MODULES = ("can", "can_raw", "vcan", "vxcan", "can_gw")
_START = (
    "`sudo systemctl start hycan-daemon.socket` (not installed yet? run "
    "`sudo deploy/install.sh` in a hycan checkout)"
)
# Where a module missing from the running kernel comes from, by os-release ID / ID_LIKE;
# the first match wins (Ubuntu says ID_LIKE=debian).
_INSTALL = (
    ("ubuntu", "`sudo apt install linux-modules-extra-$(uname -r)`"),
    ("debian", "Debian's linux-image package ships it: `sudo apt install linux-image-$(uname -r)`"),
    ("fedora", "`sudo dnf install kernel-modules-extra`"),
    ("arch", "the stock kernel ships it: reboot if the kernel was upgraded since boot"),
)
_INSTALL_OTHER = "install your distribution's kernel modules package for $(uname -r)"
# sysctl (below /proc/sys), the value that forbids user namespaces, and the fix's value.
_USERNS = (
    ("kernel/unprivileged_userns_clone", "0", "1"),
    ("user/max_user_namespaces", "0", "15000"),
    ("kernel/apparmor_restrict_unprivileged_userns", "1", "0"),
)


@dataclass(frozen=True)
class System:
    """The filesystem roots and user facts the checks read; defaults: this machine."""

    proc: str = "/proc"
    sys: str = "/sys"
    modules_dir: str = field(default_factory=lambda: "/lib/modules/" + os.uname().release)
    os_release: str = OS_RELEASE
    uid: int = field(default_factory=os.getuid)
    groups: frozenset[int] = field(
        default_factory=lambda: frozenset({os.getegid(), *os.getgroups()})
    )
    in_container: bool = field(default_factory=_advice_in_container)
    getpwuid: Callable[[int], pwd.struct_passwd] = pwd.getpwuid
    getgrgid: Callable[[int], grp.struct_group] = grp.getgrgid
    getgrnam: Callable[[str], grp.struct_group] = grp.getgrnam


class Check(NamedTuple):
    """One finding: ``ok`` True (fine), None (a warning) or False (a problem)."""

    name: str
    ok: bool | None
    detail: str
    fix: str | None


def doctor(
    socket: str | None, timeout: float, daemon_uid: int | None, system: System | None = None
) -> tuple[int, dict[str, Any], str]:
    """Run every check; return (exit status, JSON object, human text) as ``cli.run`` does.
    Exit status 1 when a vcan cannot be created through the daemon, else 0."""
    system = System() if system is None else system
    choice = client_socket(socket)
    daemon = _daemon(choice, timeout, daemon_uid)
    checks = [
        daemon,
        _socket(choice.path, system),
        _group(choice.path, system, answered=daemon.ok is True),
        *(_module(name, system) for name in MODULES),
        _userns(system),
    ]
    problems = sum(check.ok is False for check in checks)
    result: dict[str, Any] = {"ok": not problems, "checks": [check._asdict() for check in checks]}
    lines = [_line(check) for check in checks]
    if problems:
        plural = "" if problems == 1 else "s"
        lines.append(f"{problems} problem{plural}: a vcan cannot be created until they are fixed")
    else:
        lines.append("everything a vcan needs works")
    return int(bool(problems)), result, "\n".join(lines)


def _line(check: Check) -> str:
    label = {True: "ok", None: "warn", False: "PROBLEM"}[check.ok]
    fix = f" -> {check.fix}" if check.fix and check.ok is not True else ""
    return f"{label:<8}{check.name:<9}{check.detail}{fix}"


def _daemon(choice: SocketChoice, timeout: float, daemon_uid: int | None) -> Check:
    explicit = choice.path if choice.explicit else None
    client = DaemonClient(explicit, timeout=timeout, fallback=False, daemon_uid=daemon_uid)
    try:
        with client:
            info = client.ping()
    except PermissionDenied as exc:  # its message names the group to join, or the squatter
        return Check("daemon", False, exc.message, None)
    except HycanError as exc:
        own = f"start one there: `sudo hycan-daemon --socket {choice.path} --group {SERVICE_USER}`"
        mine = choice.explicit and choice.path != SYSTEM_SOCKET
        return Check("daemon", False, exc.message, own if mine else _START)
    detail = (
        f"hycan-daemon {info['version']} on {client.socket_path} "
        f"(protocol {info['protocol']}, backend {info['backend']})"
    )
    return Check("daemon", True, detail, None)


def _socket(path: str, system: System) -> Check:
    try:
        st = os.stat(path)
    except OSError as exc:
        return Check("socket", False, f"{path}: {exc.strerror}", "start the daemon (see above)")
    if not stat.S_ISSOCK(st.st_mode):
        return Check("socket", False, f"{path} is not a socket", f"remove {path}, then restart")
    mode = stat.S_IMODE(st.st_mode)
    user = _name(lambda: system.getpwuid(st.st_uid).pw_name, st.st_uid)
    group = _name(lambda: system.getgrgid(st.st_gid).gr_name, st.st_gid)
    detail = f"{path}: owner {user}, group {group}, mode {mode:04o}"
    if mode & 0o006:
        return Check("socket", None, detail + ": every local user may use it", f"chmod o-rw {path}")
    if mode & 0o060 != 0o060:
        return Check("socket", None, detail + ": its group may not use it", f"chmod g+rw {path}")
    return Check("socket", True, detail, None)


def _name(lookup: Callable[[], str], number: int) -> str:
    try:
        return lookup()
    except KeyError:
        return str(number)


def _group(path: str, system: System, *, answered: bool) -> Check:
    if system.uid == 0:
        return Check("group", True, "root may use any socket", None)
    try:
        st: os.stat_result | None = os.stat(path)
    except OSError:  # no socket yet: check the group the system service uses
        st = None
    if st is not None and st.st_uid == system.uid:
        return Check("group", True, f"you own {path}", None)
    try:
        entry = system.getgrnam(SERVICE_USER) if st is None else system.getgrgid(st.st_gid)
    except KeyError:
        what = f"no group {SERVICE_USER}" if st is None else f"group {st.st_gid} has no name"
        return Check("group", None, what, None)
    name = entry.gr_name
    if entry.gr_gid in system.groups:
        return Check("group", True, f"you are in group {name}", None)
    # Needed only when the daemon did not let us in through the socket we found.
    bad = None if answered or st is None else False
    try:
        me = system.getpwuid(system.uid)
        listed = me.pw_gid == entry.gr_gid or me.pw_name in entry.gr_mem
    except KeyError:
        listed = False
    if listed:
        detail = f"you were added to group {name} but this login session predates it"
        return Check("group", bad, detail, f"log in again (or run `newgrp {name}`)")
    fix = f"`sudo usermod -aG {name} $USER`, then log in again"
    return Check("group", bad, f"you are not in group {name}", fix)


def _module(module: str, system: System) -> Check:
    proc_modules = _read(os.path.join(system.proc, "modules")).splitlines()
    if os.path.isdir(os.path.join(system.sys, "module", module)) or module in {
        line.split(" ", 1)[0] for line in proc_modules
    }:
        return Check("modules", True, f"{module} loaded", None)
    builtin = _read(os.path.join(system.modules_dir, "modules.builtin")).splitlines()
    if module in {_module_name(line) for line in builtin}:
        return Check("modules", True, f"{module} built into the kernel", None)
    modprobe = f"`sudo modprobe {module}`"
    if system.in_container:
        modprobe = f"on the host run {modprobe} (only the host can load it into a container)"
    if module in _available(system.modules_dir):
        detail = f"{module} not loaded (available; the kernel may also load it on first use)"
        return Check("modules", None, detail, modprobe)
    missing = f"{module} not found in {system.modules_dir}"
    if not os.path.isdir(system.modules_dir):
        missing += " (no such directory)"
    install = modprobe if system.in_container else f"{_install_hint(system)}, then {modprobe}"
    return Check("modules", False if module == "vcan" else None, missing, install)


def _module_name(path: str) -> str:
    """``kernel/net/can/can-gw.ko.xz`` -> ``can_gw`` (modprobe treats - and _ alike)."""
    return os.path.basename(path.strip()).split(".ko", 1)[0].replace("-", "_")


def _available(modules_dir: str) -> set[str]:
    dep = os.path.join(modules_dir, "modules.dep")
    if os.path.exists(dep):
        return {_module_name(line.partition(":")[0]) for line in _read(dep).splitlines()}
    return {  # depmod has not run: the module files themselves
        _module_name(name)
        for _dir, _subdirs, names in os.walk(os.path.join(modules_dir, "kernel"))
        for name in names
        if ".ko" in name
    }


def _install_hint(system: System) -> str:
    fields = {}
    for line in _read(system.os_release).splitlines():
        key, _, value = line.strip().partition("=")
        fields[key] = value.strip("\"'")
    family = {fields.get("ID", ""), *fields.get("ID_LIKE", "").split()}
    return next((hint for distro, hint in _INSTALL if distro in family), _INSTALL_OTHER)


def _userns(system: System) -> Check:
    for key, forbids, allows in _USERNS:
        if _read(os.path.join(system.proc, "sys", key)).strip() == forbids:
            name = key.replace("/", ".")
            detail = f"{name} = {forbids}: `hycan run` cannot create its user namespace"
            return Check("userns", None, detail, f"`sudo sysctl -w {name}={allows}`")
    return Check("userns", True, "unprivileged user namespaces allowed (`hycan run`)", None)


def _read(path: str) -> str:
    """The file's text, or "" when it cannot be read (absent on this kernel, no /proc)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as text:
            return text.read()
    except OSError:
        return ""
