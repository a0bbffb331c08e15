"""Link kinds by name, cached and kept current by the kernel's link notifications.

The daemon's policy needs a link's kind (vcan or not) before it acts on a name. A link's
kind never changes (it is fixed when the link is created), but which link a name refers
to does: links are created, deleted, renamed and moved between namespaces. The kernel
announces every one of those changes on the RTNLGRP_LINK multicast group, queued to each
listener before the system call that made the change returns. So this cache reads every
pending notification before each lookup (one non-blocking ``recv`` when nothing
happened) and forgets whatever a notification may have changed: an answer from the cache
is as fresh as asking the kernel with RTM_GETLINK. If notifications were lost (ENOBUFS:
the socket's buffer overflowed) it forgets everything.
"""

from __future__ import annotations

import errno
import socket

from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_NEWLINK

from hycan._status import LinkStatus
from hycan.backends._linkmsg import IFINFOMSG, IFLA_IFNAME, NLMSG_HEADER, attributes, string

RTMGRP_LINK = 1  # the RTNLGRP_LINK group's bit in sockaddr_nl.nl_groups
_HEADERS = NLMSG_HEADER.size + IFINFOMSG.size
_IFNAME = frozenset({IFLA_IFNAME})
_RECV_SIZE = 65536
_RCVBUF = 1 << 20  # room for bursts of notifications between two lookups
_MAX_NAMES = 1024  # names are client-chosen: bound what is remembered


class LinkKinds:
    """``name -> (exists, kind)`` for this network namespace, exact as of each lookup."""

    def __init__(self) -> None:
        self._kinds: dict[str, str | None] = {}  # links known to exist -> kind
        self._missing: set[str] = set()  # names known not to exist
        self._names: dict[int, str] = {}  # ifindex -> name, for the links in _kinds
        self._sock = self._open()

    @staticmethod
    def _open() -> socket.socket:
        sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
            socket.NETLINK_ROUTE,
        )
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        sock.bind((0, RTMGRP_LINK))
        return sock

    def lookup(self, name: str) -> tuple[bool, str | None] | None:
        """(exists, kind) if known for certain, None if the kernel must be asked."""
        self._drain()
        if name in self._kinds:
            return True, self._kinds[name]
        if name in self._missing:
            return False, None
        return None

    def remember(self, status: LinkStatus) -> None:
        """Keep what RTM_GETLINK said (call it after :meth:`lookup` returned None)."""
        if len(self._kinds) + len(self._missing) >= _MAX_NAMES:
            self._forget_all()
        if not status.exists:
            self._missing.add(status.name)
        elif status.ifindex is not None:
            self._kinds[status.name] = status.kind
            self._names[status.ifindex] = status.name

    def close(self) -> None:
        """Close the notification socket."""
        self._sock.close()

    def _forget_all(self) -> None:
        self._kinds.clear()
        self._missing.clear()
        self._names.clear()

    def _drain(self) -> None:
        while True:
            try:
                data = self._sock.recv(_RECV_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                self._forget_all()  # notifications were lost (ENOBUFS) or the socket broke
                if exc.errno != errno.ENOBUFS:
                    self._sock.close()
                    self._sock = self._open()
                    return
                continue
            self._apply(data)

    def _apply(self, data: bytes) -> None:
        offset = 0
        while offset + _HEADERS <= len(data):
            length, msg_type, _, _, _ = NLMSG_HEADER.unpack_from(data, offset)
            end = offset + length
            if length < _HEADERS or end > len(data):
                self._forget_all()  # malformed: trust nothing
                return
            if msg_type in (RTM_NEWLINK, RTM_DELLINK):
                _, _, index, _, _ = IFINFOMSG.unpack_from(data, offset + NLMSG_HEADER.size)
                found = attributes(data, offset + _HEADERS, end, _IFNAME)
                name = string(data, found[IFLA_IFNAME]) if IFLA_IFNAME in found else None
                self._changed(msg_type, index, name)
            offset += (length + 3) & ~3

    def _changed(self, msg_type: int, index: int, name: str | None) -> None:
        known = self._names.get(index)
        if msg_type == RTM_NEWLINK and known is not None and known == name:
            return  # the same link under the same name: its state changed, not its kind
        if known is not None:
            del self._names[index]
            self._kinds.pop(known, None)
        if name is not None:
            self._kinds.pop(name, None)
            self._missing.discard(name)
