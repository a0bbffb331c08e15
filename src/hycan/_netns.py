"""Network namespaces named by file descriptor: what a client passes, what the daemon checks.

A client names a network namespace by an open file of it (``/proc/self/ns/net``,
``/run/netns/NAME``, ``/proc/PID/ns/net``), passed over the daemon's socket with
SCM_RIGHTS. The daemon asks the kernel about that file with the nsfs ioctls
(``linux/nsfs.h``) and classifies it (:class:`Where`):

- ``host``: the daemon's own network namespace.
- ``own``: a namespace whose owning user namespace, and every user namespace above it
  up to the daemon's, was created by the caller's uid (a rootless sandbox, a rootless
  Podman container): the caller already holds every capability over it there.
- ``other``: anything else, e.g. a namespace of the initial user namespace (made by
  ``ip netns add`` or a rootful container engine) or another user's.

Nothing here acts on a namespace; it only reads what the kernel says about a file.
"""

from __future__ import annotations

import array
import enum
import fcntl
import os
import socket
import struct
from typing import NamedTuple

# linux/nsfs.h: _IO(0xb7, n)
NS_GET_USERNS = 0xB701
NS_GET_PARENT = 0xB702
NS_GET_NSTYPE = 0xB703
NS_GET_OWNER_UID = 0xB704
CLONE_NEWNET = 0x40000000
_UID = struct.Struct("=I")
_MAX_DEPTH = 33  # the kernel nests user namespaces at most 32 deep


class Where(enum.StrEnum):
    """Which kind of network namespace a request acts in (the policy file's names)."""

    HOST = "host"
    OWN = "own"
    OTHER = "other"


class Netns(NamedTuple):
    """What the kernel says about a network namespace file a client passed."""

    fd: int  # the daemon's descriptor of it (keeps the namespace alive while open)
    inode: int  # its nsfs inode: the namespace's identity (``ls -iL /proc/self/ns/net``)
    where: Where
    owner: int | None  # uid that created its user namespace; None: the initial one's


class NotANetns(ValueError):
    """The descriptor is not a network namespace (or the kernel would not say)."""


def identity_of(netns: int | str) -> tuple[int, int]:
    """(device, inode) of a namespace file (a path or an open descriptor): equal for
    every file of one namespace."""
    st = os.stat(netns)
    return st.st_dev, st.st_ino


def classify(fd: int, uid: int) -> Netns:
    """Classify the network namespace open as ``fd`` for a caller of ``uid``.

    Raises :class:`NotANetns` with a reason a person can act on when ``fd`` is not a
    network namespace. ``fd`` stays open (the caller keeps or closes it).
    """
    # An ioctl number means something else to other drivers: ask only files of nsfs (the
    # one file system every namespace file lives on, bind mounts in /run/netns included).
    try:
        on_nsfs = os.fstat(fd).st_dev == os.stat("/proc/self/ns/net").st_dev
        nstype = fcntl.ioctl(fd, NS_GET_NSTYPE) if on_nsfs else None
    except OSError as exc:
        raise NotANetns(f"the file passed is not a namespace ({exc.strerror})") from None
    if nstype is None:
        raise NotANetns(
            "the file passed is not a namespace: pass an open /proc/PID/ns/net or /run/netns/NAME"
        )
    if nstype != CLONE_NEWNET:
        raise NotANetns(
            "the file passed is a namespace, but not a network namespace "
            "(pass /proc/PID/ns/net, not another file of /proc/PID/ns)"
        )
    identity = identity_of(fd)
    if identity == identity_of("/proc/self/ns/net"):
        return Netns(fd, identity[1], Where.HOST, None)
    owners = _user_namespace_owners(fd)
    if not owners:
        return Netns(fd, identity[1], Where.OTHER, None)
    mine = all(owner == uid for owner in owners)
    return Netns(fd, identity[1], Where.OWN if mine else Where.OTHER, owners[0])


def _user_namespace_owners(netns_fd: int) -> list[int]:
    """The creators' uids of the namespace's user namespace and of each one above it, up
    to (not including) the daemon's own: empty when the daemon's user namespace owns it.
    A chain the kernel will not show us (EPERM) reads as owned by nobody we know (-1)."""
    ours = identity_of("/proc/self/ns/user")
    owners: list[int] = []
    userns = fcntl.ioctl(netns_fd, NS_GET_USERNS)
    try:
        for _ in range(_MAX_DEPTH):
            if identity_of(userns) == ours:
                return owners
            buf = bytearray(_UID.size)
            fcntl.ioctl(userns, NS_GET_OWNER_UID, buf)
            owners.append(_UID.unpack(buf)[0])
            parent = fcntl.ioctl(userns, NS_GET_PARENT)
            os.close(userns)
            userns = parent
    except OSError:
        pass
    finally:
        os.close(userns)
    return [*owners, -1]


def open_netns(netns: int | str) -> tuple[int, bool]:
    """A client's namespace argument as a descriptor: an int is used as it is, a path is
    opened (read-only, close-on-exec). Returns (fd, whether the caller must close it)."""
    if isinstance(netns, int):
        return netns, False
    return os.open(netns, os.O_RDONLY | os.O_CLOEXEC), True


def fds_from(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors an SCM_RIGHTS message carried (from ``socket.recvmsg``)."""
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds += array.array("i", data[:usable]).tolist()
    return fds


def rights(fd: int) -> list[tuple[int, int, bytes]]:
    """The ancillary data that passes ``fd`` with ``socket.sendmsg``."""
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())]
