"""The daemon's listening socket: bound safely, never displacing a live daemon.

The socket is bound inside a fresh private directory (0700) next to the final path,
given its final owner, mode and ACL there, and only then renamed into place, so it is never
reachable with looser permissions than intended.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass

from hycan.daemon import acl

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
            if (st.st_dev, st.st_ino) == self.inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:  # the directories changed since the start-up probe
            log.warning("could not remove %s (%s): the next start replaces it", self.path, exc)


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


def bind_unix(
    path: str,
    *,
    mode: int = 0o660,
    gid: int | None = None,
    uid: int | None = None,
    allow_uids: Iterable[int] = (),
) -> BoundSocket:
    """Bind and listen on ``path`` with ``mode``, owner ``uid``, group ``gid`` and a
    read+write ACL entry for each of ``allow_uids``, all from the first instant."""
    allow_uids = tuple(allow_uids)
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
        if gid is not None or uid is not None:
            os.chown(staged, -1 if uid is None else uid, -1 if gid is None else gid)
        os.chmod(staged, mode)
        if allow_uids:
            try:
                acl.grant(staged, allow_uids)
            except OSError as exc:
                raise StartupError(
                    f"cannot give uids {', '.join(map(str, allow_uids))} access to {path}: "
                    f"the file system of {parent} takes no POSIX ACL ({exc.strerror}); "
                    "put the socket elsewhere, or admit them with --group instead"
                ) from None
        sock.listen(socket.SOMAXCONN)
        st = os.lstat(staged)
        os.rename(staged, path)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot bind {path}: {exc.strerror or exc}") from None
    except StartupError:
        sock.close()
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(staged)
        with contextlib.suppress(OSError):
            os.rmdir(private_dir)
    return BoundSocket(sock, path, (st.st_dev, st.st_ino))
