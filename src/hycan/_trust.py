"""Whom a client lets serve it, and what it says when the kernel refuses to connect it.

Both checks run before a request is sent: a client never hands a request to a socket it has
not verified, and a refusal names the cause a person can fix (a group to join, a session
to renew) or the danger (someone else's socket at the daemon's path).
"""

from __future__ import annotations

import os
import pwd
import stat

from hycan._peercred import SocketLike, peer_ucred
from hycan.errors import PermissionDenied

DAEMON_UID_ENV = "HYCAN_DAEMON_UID"
SERVICE_USER = "hycan"
"""The system user deploy/ runs the daemon as (deploy/sysusers.d/hycan.conf)."""


def check_server(sock: SocketLike, path: str, daemon_uid: int | None) -> None:
    """Refuse a socket served by an unexpected uid (e.g. squatted in /tmp by another user).

    Trusted: root, ourselves, the ``hycan`` service user (creating users takes root, so none
    of these is a squatter), and ``daemon_uid``; without it, ``$HYCAN_DAEMON_UID`` unless
    this process is privileged (the environment of a root process is not its own: ``sudo
    -E``, CI runners).
    """
    _pid, uid, _gid = peer_ucred(sock)
    if uid in (0, os.geteuid(), daemon_uid) or uid == _service_uid():
        return
    from_env = _env_daemon_uid() == uid and daemon_uid is None
    if from_env and not privileged():
        return
    raise _squatted(path, uid, from_env)


def privileged() -> bool:
    """Whether this process is root, set-id, or holds any effective capability."""
    if os.geteuid() == 0 or os.geteuid() != os.getuid() or os.getegid() != os.getgid():
        return True
    from hycan._caps import read_cap_state

    try:
        return read_cap_state("thread-self").effective != 0
    except (OSError, ValueError):  # no /proc: assume the worst
        return True


def _service_uid() -> int | None:
    try:
        return pwd.getpwnam(SERVICE_USER).pw_uid
    except KeyError:
        return None


def _env_daemon_uid() -> int | None:
    configured = os.environ.get(DAEMON_UID_ENV, "")
    return int(configured) if configured.isdigit() else None


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "no user name"


def _squatted(path: str, uid: int, env_ignored: bool) -> PermissionDenied:
    message = (
        f"refusing to use {path}: someone else's socket is at this path. It is served by "
        f"uid {uid} ({_user_name(uid)}), which is not root, you, or the {SERVICE_USER!r} "
        "service user, so it may be set there to catch your requests; nothing was sent to "
        "it. Ask your administrator who runs it."
    )
    if env_ignored:
        message += (
            f" (${DAEMON_UID_ENV} is ignored in a privileged process: root, set-id or "
            "holding capabilities.)"
        )
    return PermissionDenied(message)


def permission_refused(path: str) -> PermissionDenied:
    """The kernel refused to connect us to ``path``: say why, and what would let us in."""
    try:
        st = os.stat(path)
    except OSError:
        return PermissionDenied(
            f"permission denied: a directory on the way to {path} is closed to uid "
            f"{os.geteuid()}; ask your administrator"
        )
    mine = [os.getegid(), *sorted(set(os.getgroups()) - {os.getegid()})]
    group = _group_name(st.st_gid)
    current = f"(your current groups: {', '.join(_group_name(gid) for gid in mine)})"
    mode = stat.S_IMODE(st.st_mode)
    if not mode & stat.S_IWGRP:
        problem = f"only its owner {_user_name(st.st_uid)} may use {path} (mode {mode:04o})"
    elif st.st_gid == 0:
        problem = (
            f"only root may use {path} (group root): the daemon has no access group; an "
            f"administrator can start it with `--group {SERVICE_USER}`"
        )
    elif st.st_gid in mine:
        problem = (
            f"{path} refused you although you are in its group {group}: an ACL or a "
            "security module keeps you out; ask your administrator"
        )
    elif _listed_in(st.st_gid):
        problem = (
            f"the group database lists you in group {group}, which may use {path}, but this "
            f"session started before you were added: log in again or run `newgrp {group}` "
            f"{current}"
        )
    else:
        problem = (
            f"you are not in group {group}, which may use {path}: `sudo usermod -aG {group} "
            f"$USER`, then log in again {current}"
        )
    return PermissionDenied(f"permission denied: {problem}")


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _listed_in(gid: int) -> bool:
    """Whether the group database makes this user a member of ``gid`` (at next login)."""
    import grp

    try:
        user = pwd.getpwuid(os.getuid())
        return user.pw_gid == gid or user.pw_name in grp.getgrgid(gid).gr_mem
    except KeyError:
        return False
