"""The real backend: rtnetlink through one AF_NETLINK socket kept open for the daemon's life.

Messages are built and parsed with pyroute2's ``ifinfmsg`` class (no hand-packed netlink),
but sent on our own blocking socket instead of through pyroute2's asyncio-based ``IPRoute``:
rtnetlink answers synchronously inside ``send()``, so a request costs one send and one
receive. Links are addressed by name (``IFLA_IFNAME`` with index 0), so no name->index
lookup is needed. No subprocess, no shell.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Any

from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
)
from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_GETLINK, RTM_NEWLINK
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg

from hycan.backends.base import LinkStatus

_NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_NLMSG_ERRNO = struct.Struct("=i")
_RECV_SIZE = 65536


class NetlinkBackend:
    """rtnetlink link operations on the network namespace the daemon was started in."""

    def __init__(self, *, timeout: float = 5.0) -> None:
        self._timeout = timeout
        self._seq = 0
        self._sock = self._open()

    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        sock.bind((0, 0))
        sock.settimeout(self._timeout)
        return sock

    def add_link(self, name: str, kind: str) -> None:
        """RTM_NEWLINK with NLM_F_CREATE|NLM_F_EXCL and IFLA_LINKINFO kind."""
        linkinfo = {"attrs": [("IFLA_INFO_KIND", kind)]}
        self._request(
            RTM_NEWLINK,
            NLM_F_CREATE | NLM_F_EXCL,
            name,
            attrs=[("IFLA_LINKINFO", linkinfo)],
        )

    def set_up(self, name: str, up: bool) -> None:
        """RTM_NEWLINK changing only IFF_UP."""
        self._request(RTM_NEWLINK, 0, name, flags=IFF_UP if up else 0, change=IFF_UP)

    def delete_link(self, name: str) -> None:
        """RTM_DELLINK by name."""
        self._request(RTM_DELLINK, 0, name)

    def status(self, name: str) -> LinkStatus:
        """RTM_GETLINK by name; ``exists=False`` on ENODEV."""
        try:
            reply = self._request(RTM_GETLINK, 0, name)
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return LinkStatus(name, exists=False)
            raise
        assert reply is not None
        linkinfo = reply.get_attr("IFLA_LINKINFO")
        kind = linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo is not None else None
        return LinkStatus(
            name,
            exists=True,
            kind=kind,
            up=bool(reply["flags"] & IFF_UP),
            operstate=reply.get_attr("IFLA_OPERSTATE"),
            mtu=reply.get_attr("IFLA_MTU"),
            index=reply["index"],
        )

    def close(self) -> None:
        """Close the netlink socket."""
        self._sock.close()

    def _request(
        self,
        msg_type: int,
        nl_flags: int,
        name: str,
        *,
        attrs: list[Any] | None = None,
        **fields: int,
    ) -> Any:
        """Send one request, return the reply message (GET) or None (ACK); errors -> OSError."""
        msg = ifinfmsg()
        msg["index"] = 0
        for key, value in fields.items():
            msg[key] = value
        msg["attrs"] = [("IFLA_IFNAME", name), *(attrs or [])]
        self._seq = self._seq % 0x7FFFFFFF + 1
        seq = self._seq
        msg["header"]["type"] = msg_type
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | nl_flags
        msg["header"]["sequence_number"] = seq
        msg.encode()
        try:
            self._sock.send(msg.data)
            code, reply = self._receive(seq)
        except OSError:
            # The socket itself failed (ENOBUFS, timeout, ...): use a fresh one next time.
            self._reopen()
            raise
        if code:
            raise OSError(code, os.strerror(code), name)
        return reply

    def _receive(self, seq: int) -> tuple[int, Any]:
        """Read until the ACK/error for ``seq``; return (errno or 0, decoded reply or None)."""
        reply = None
        while True:
            data = self._sock.recv(_RECV_SIZE)
            offset = 0
            while offset + _NLMSG_HEADER.size <= len(data):
                length, msg_type, _flags, msg_seq, _port = _NLMSG_HEADER.unpack_from(data, offset)
                if length < _NLMSG_HEADER.size:
                    raise OSError(errno.EPROTO, "malformed netlink message from the kernel")
                if msg_seq == seq:
                    if msg_type == NLMSG_ERROR:
                        (code,) = _NLMSG_ERRNO.unpack_from(data, offset + _NLMSG_HEADER.size)
                        return -code, reply
                    if msg_type == NLMSG_DONE:
                        return 0, reply
                    if msg_type == RTM_NEWLINK:
                        reply = ifinfmsg(data[offset : offset + length])
                        reply.decode()
                offset += (length + 3) & ~3

    def _reopen(self) -> None:
        try:
            self._sock.close()
        finally:
            self._sock = self._open()
