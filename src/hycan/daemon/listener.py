"""The daemon's listening socket: bound safely, never displacing a live daemon.

The socket is bound inside a fresh private directory (0700) next to the final path,
given its final owner and mode there, and only then renamed into place, so it is never
reachable with looser permissions than intended.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import tempfile
from dataclasses import dataclass

log = logging.getLogger("hycan.daemon")


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class BoundSocket:
    """A listening socket and, if we bound it ourselves, the inode we created."""

    sock: socket.socket
    path: str
    inode: tuple[int, int] | None  # (st_dev, st_ino), None for a socket from systemd

    def remove(self) -> None:
        """Unlink our socket file, but only if the path still is the socket we created."""
        if self.inode is None:
            return
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self.inode:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def _daemon_answers(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as exc:
        # EACCES etc.: somebody's socket we can't even probe; don't touch it.
        raise StartupError(f"cannot probe existing socket {path}: {exc.strerror}") from None
    finally:
        probe.close()
    return True


def _clear_stale(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StartupError(
            f"{path} exists and is not a socket; refusing to delete it (remove it yourself "
            "or pick another path with --socket)"
        )
    if _daemon_answers(path):
        raise StartupError(f"hycan-daemon already running on {path} (a live daemon answers there)")
    log.info("replacing stale socket %s", path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def bind_unix(path: str, *, mode: int = 0o660, gid: int | None = None) -> BoundSocket:
    """Bind and listen on ``path`` with ``mode`` and group ``gid`` from the first instant."""
    parent = os.path.dirname(os.path.abspath(path)) or "/"
    if not os.path.isdir(parent):
        raise StartupError(f"cannot create {path}: directory {parent} does not exist")
    _clear_stale(path)
    try:
        private_dir = tempfile.mkdtemp(prefix=".hycan-", dir=parent)
    except OSError as exc:
        raise StartupError(
            f"cannot create {path}: {parent} is not writable ({exc.strerror})"
        ) from None
    staged = os.path.join(private_dir, "sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(staged)
        if gid is not None:
            os.chown(staged, -1, gid)
        os.chmod(staged, mode)
        sock.listen(socket.SOMAXCONN)
        st = os.lstat(staged)
        os.rename(staged, path)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot bind {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(staged)
        with contextlib.suppress(OSError):
            os.rmdir(private_dir)
    return BoundSocket(sock, path, (st.st_dev, st.st_ino))
