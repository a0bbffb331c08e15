"""The kernel's link announcements (RTNLGRP_LINK), read as link statuses for WATCH."""

from __future__ import annotations

import errno
import socket

from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_NEWLINK

from hycan.backends._linkkinds import RTMGRP_LINK
from hycan.backends._linkmsg import IFINFOMSG, NLMSG_HEADER, parse_link
from hycan.backends.base import LinkStatus

_RCVBUF = 1 << 20  # room for a burst (a link's notification is ~1 KiB)
_RECV_SIZE = 65536


class NetlinkMonitor:
    """A socket subscribed to the link announcements of the namespace it was opened in."""

    def __init__(self) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
            socket.NETLINK_ROUTE,
        )
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            self._sock.bind((0, RTMGRP_LINK))
        except BaseException:
            self._sock.close()
            raise

    def fileno(self) -> int:
        """The descriptor to wait on: readable when announcements are pending."""
        return self._sock.fileno()

    def read(self) -> list[LinkStatus] | None:
        """Every link status announced since the last read (a deleted link: ``exists``
        False, with its ifindex), oldest first; None if some were lost (the socket's
        buffer overflowed): then only a full list of the links tells the truth."""
        found: list[LinkStatus] = []
        lost = False
        while True:
            try:
                data = self._sock.recv(_RECV_SIZE)
            except BlockingIOError:
                return None if lost else found
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                lost = True
                continue
            found += _statuses(data)

    def close(self) -> None:
        """Unsubscribe."""
        self._sock.close()


def _statuses(data: bytes) -> list[LinkStatus]:
    found = []
    offset = 0
    while offset + NLMSG_HEADER.size + IFINFOMSG.size <= len(data):
        length, msg_type, _, _, _ = NLMSG_HEADER.unpack_from(data, offset)
        if length < NLMSG_HEADER.size or offset + length > len(data):
            break
        message = data[offset : offset + length]
        if msg_type == RTM_NEWLINK:
            found.append(parse_link("", message))
        elif msg_type == RTM_DELLINK:
            index = IFINFOMSG.unpack_from(message, NLMSG_HEADER.size)[2]
            found.append(LinkStatus("", exists=False, ifindex=index))
        offset += (length + 3) & ~3
    return found
