"""Who is on the other end of a connected AF_UNIX socket (stdlib only, light to import:
the daemon authorizes clients with it, clients check the daemon's uid with it).

The kernel records the peer's pid, uid, gid and supplementary groups when the
connection is made (connect(2) / socketpair(2)); SO_PEERCRED and SO_PEERGROUPS
return that snapshot, so later set*id calls of the peer do not change it and
nothing is looked up through /proc/PID (which a pid reuse could fool).
"""

from __future__ import annotations

import errno
import os
import pwd
import socket
import struct
from typing import NamedTuple, Protocol

__all__ = ["SO_PEERGROUPS", "PeerCredentials", "SocketLike", "peer_credentials", "peer_ucred"]

# asm-generic/socket.h (Linux 4.13+); Python's socket module does not always define it.
SO_PEERGROUPS: int = getattr(socket, "SO_PEERGROUPS", 59)
_UCRED = struct.Struct("=iII")  # struct ucred: pid_t pid; uid_t uid; gid_t gid
_GID_SIZE = 4  # sizeof(gid_t)
# CPython's getsockopt() accepts at most 1024 bytes, i.e. 256 groups; more go through libc.
_STDLIB_MAX_BUFLEN = 1024


class SocketLike(Protocol):
    """What :func:`peer_credentials` needs: a stdlib or trio socket."""

    def fileno(self) -> int: ...

    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...


class PeerCredentials(NamedTuple):
    """The peer's credentials at connect time; ``groups`` are its supplementary gids."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...]


def _peer_groups_libc(fd: int) -> bytes:
    """SO_PEERGROUPS for more than 256 groups: ask for the size, then read."""
    import ctypes  # rare path: kept off the import of this module

    libc = ctypes.CDLL(None, use_errno=True)
    size = ctypes.c_uint32(0)
    # With a zero length the kernel fails with ERANGE and stores the length it needs.
    libc.getsockopt(fd, socket.SOL_SOCKET, SO_PEERGROUPS, None, ctypes.byref(size))
    buf = ctypes.create_string_buffer(size.value)
    if libc.getsockopt(fd, socket.SOL_SOCKET, SO_PEERGROUPS, buf, ctypes.byref(size)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"getsockopt(SO_PEERGROUPS): {os.strerror(err)}")
    return buf.raw[: size.value]


def _peer_groups(sock: SocketLike, uid: int, gid: int) -> tuple[int, ...]:
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, _STDLIB_MAX_BUFLEN)
    except OSError as exc:
        if exc.errno == errno.ERANGE:
            raw = _peer_groups_libc(sock.fileno())
        elif exc.errno == errno.ENOPROTOOPT:  # Linux < 4.13: ask the group database
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                return (gid,)
            return tuple(os.getgrouplist(name, gid))
        else:
            raise
    return struct.unpack(f"={len(raw) // _GID_SIZE}I", raw)


def peer_ucred(sock: SocketLike) -> tuple[int, int, int]:
    """The peer's (pid, uid, gid) from SO_PEERCRED, without its groups."""
    pid, uid, gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    return pid, uid, gid


def peer_credentials(sock: SocketLike) -> PeerCredentials:
    """Return the kernel's record of who is on the other end of connected ``sock``.

    ``groups`` comes from SO_PEERGROUPS: exactly the peer's supplementary
    groups (sorted by the kernel; the primary gid appears only if it is also a
    supplementary group). On kernels without SO_PEERGROUPS it falls back to the
    group database for ``uid`` (``os.getgrouplist``, which includes ``gid``) --
    never to /proc/PID. Raises OSError if ``sock`` is not a connected AF_UNIX socket.
    """
    pid, uid, gid = peer_ucred(sock)
    return PeerCredentials(pid, uid, gid, _peer_groups(sock, uid, gid))
