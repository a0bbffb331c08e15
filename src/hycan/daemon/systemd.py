"""Minimal, dependency-free systemd integration: sd_notify and sd_listen_fds.

Both follow the protocols documented in sd_notify(3) and sd_listen_fds(3):

* ``notify()`` sends one datagram (e.g. ``"READY=1"``) to the AF_UNIX socket
  named by ``$NOTIFY_SOCKET`` (a filesystem path, or an abstract-namespace
  name when it starts with ``@``).
* ``listen_fds()`` collects the sockets that socket activation passed in,
  starting at file descriptor 3, when ``$LISTEN_PID`` names this process.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import stat

__all__ = [
    "SD_LISTEN_FDS_START",
    "ListenFdError",
    "listen_fds",
    "notify",
]

log = logging.getLogger(__name__)

#: First file descriptor passed by socket activation (sd-daemon.h).
SD_LISTEN_FDS_START = 3

_LISTEN_ENV = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class ListenFdError(ValueError):
    """A passed file descriptor is missing or not a listening AF_UNIX stream socket."""


def _notify_address(value: str) -> str | bytes:
    """Translate ``$NOTIFY_SOCKET`` into an address for ``socket.sendto``."""
    if value.startswith("@"):
        # Abstract namespace: leading NUL byte, no terminating NUL.
        return b"\0" + value[1:].encode()
    return value


def notify(state: str) -> bool:
    """Send *state* (e.g. ``"READY=1"``) to ``$NOTIFY_SOCKET``.

    Return True when the datagram was sent, False when ``$NOTIFY_SOCKET`` is
    unset/empty or sending failed (the OSError is logged at WARNING level,
    never raised: a daemon must not die because its supervisor went away).
    """
    value = os.environ.get("NOTIFY_SOCKET", "")
    if not value:
        return False
    if not (value.startswith("/") or value.startswith("@")):
        log.warning("NOTIFY_SOCKET=%r is not an AF_UNIX path or @abstract name", value)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), _notify_address(value))
    except OSError as exc:
        log.warning("sd_notify(%r) to %r failed: %s", state, value, exc)
        return False
    return True


def _describe_fd(fd: int) -> str:
    """Return a short human description of what *fd* is (for error messages)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        return f"not usable ({os.strerror(exc.errno or errno.EBADF)})"
    for test, name in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO/pipe"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a socket"


def _family_name(family: int) -> str:
    """Name an address family number, e.g. ``AF_INET``."""
    try:
        return socket.AddressFamily(family).name
    except ValueError:
        return f"address family {family}"


def _type_name(kind: int) -> str:
    """Name a socket type number, e.g. ``SOCK_DGRAM``."""
    try:
        return socket.SocketKind(kind).name
    except ValueError:
        return f"socket type {kind}"


def _check_listening_unix_stream(fd: int) -> None:
    """Raise ListenFdError unless *fd* is a listening AF_UNIX SOCK_STREAM socket."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        raise ListenFdError(
            f"fd {fd} passed by systemd (LISTEN_FDS) is not open: {exc.strerror}"
        ) from exc
    if not stat.S_ISSOCK(mode):
        raise ListenFdError(
            f"fd {fd} passed by systemd (LISTEN_FDS) is {_describe_fd(fd)}, "
            "expected a listening AF_UNIX SOCK_STREAM socket"
        )
    # Query through a temporary duplicate so that nothing here can close *fd*.
    probe = socket.socket(fileno=os.dup(fd))
    try:
        family = probe.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
        kind = probe.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        accepting = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    finally:
        probe.close()
    if family != socket.AF_UNIX or kind != socket.SOCK_STREAM:
        raise ListenFdError(
            f"fd {fd} passed by systemd (LISTEN_FDS) is an {_family_name(family)} "
            f"{_type_name(kind)} socket, expected a listening AF_UNIX SOCK_STREAM socket"
        )
    if not accepting:
        raise ListenFdError(
            f"fd {fd} passed by systemd (LISTEN_FDS) is an AF_UNIX SOCK_STREAM socket "
            "that is not listening (use ListenStream= with Accept=no)"
        )


def listen_fds(*, unset_environment: bool = True) -> list[socket.socket]:
    """Return the listening sockets passed by systemd socket activation.

    Implements sd_listen_fds(3): only when ``$LISTEN_PID`` equals our pid are
    ``$LISTEN_FDS`` descriptors taken, starting at fd 3. Each gets FD_CLOEXEC
    and must be a listening AF_UNIX SOCK_STREAM socket, else ListenFdError
    (a ValueError) names the fd and what it is. Returns [] when nothing was
    passed to this process. With *unset_environment* the LISTEN_* variables
    are removed (also on error) so that children do not inherit them.
    """
    try:
        pid_text = os.environ.get("LISTEN_PID", "")
        fds_text = os.environ.get("LISTEN_FDS", "")
        if not pid_text or not fds_text:
            return []
        try:
            pid = int(pid_text)
        except ValueError as exc:
            raise ListenFdError(f"LISTEN_PID={pid_text!r} is not a process id") from exc
        if pid != os.getpid():
            return []
        try:
            count = int(fds_text)
        except ValueError as exc:
            raise ListenFdError(f"LISTEN_FDS={fds_text!r} is not a number") from exc
        if count < 0:
            raise ListenFdError(f"LISTEN_FDS={fds_text!r} is negative")
        fds = range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)
        for fd in fds:
            _check_listening_unix_stream(fd)
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
            if not flags & fcntl.FD_CLOEXEC:
                fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
        return [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=fd) for fd in fds]
    finally:
        if unset_environment:
            for name in _LISTEN_ENV:
                os.environ.pop(name, None)
