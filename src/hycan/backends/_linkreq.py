"""Writing rtnetlink link requests (RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK) with ``struct``.

pyroute2's ``ifinfmsg.encode()`` costs 25-60 µs a request on this machine's class (an up
23 µs, a create 58 µs; ~2 ms under the VM's emulation), more than the kernel takes to
bring a vcan up, and every create, up and delete of a new link is a request never sent
before. These builders write the same bytes in a few µs: ``tests/test_linkreq.py`` checks
them against pyroute2's for every request the backend sends (see docs/perf.md, L18-4).
CAN settings, rare and rich, are still built by pyroute2.
"""

from __future__ import annotations

import struct

from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from hycan.backends._linkmsg import (
    IFINFOMSG,
    IFLA_IFNAME,
    IFLA_INFO_KIND,
    IFLA_LINKINFO,
    NLA_HEADER,
    NLMSG_HEADER,
    nla_type,
)

IFLA_EXT_MASK = nla_type(ifinfmsg.nla_map, "IFLA_EXT_MASK")
IFLA_NET_NS_FD = nla_type(ifinfmsg.nla_map, "IFLA_NET_NS_FD")
IFLA_IF_NETNSID = nla_type(ifinfmsg.nla_map, "IFLA_IF_NETNSID")
IFLA_INFO_DATA = nla_type(ifinfmsg.ifinfo.nla_map, "IFLA_INFO_DATA")
VETH_INFO_PEER = 1  # the peer of a veth or vxcan (linux/veth.h; vxcan's is the same number)
_U32 = struct.Struct("=I")
_EMPTY_IFINFOMSG = IFINFOMSG.pack(0, 0, 0, 0, 0)


def attr(number: int, payload: bytes) -> bytes:
    """One attribute: its header, ``payload``, zeros up to the next 4-byte boundary."""
    return NLA_HEADER.pack(4 + len(payload), number) + payload + bytes(-len(payload) % 4)


def str_attr(number: int, text: str) -> bytes:
    """A NUL-terminated string attribute (pyroute2's ``asciiz``)."""
    return attr(number, text.encode() + b"\0")


def u32_attr(number: int, value: int) -> bytes:
    """A 32-bit unsigned attribute."""
    return attr(number, _U32.pack(value))


def link_request(
    msg_type: int,
    nl_flags: int,
    *,
    index: int = 0,
    name: str = "",
    flags: int = 0,
    change: int = 0,
    attrs: bytes = b"",
    kind: str | None = None,
    peer: str | None = None,
    ack: bool = True,
) -> bytearray:
    """A link request with sequence number 0 (the sender patches it): the header, the
    ifinfomsg (``index``, ``flags``, ``change``), then IFLA_IFNAME (``name``, for a
    request by name), ``attrs`` (already packed) and IFLA_LINKINFO (``kind``, a vxcan's
    ``peer``) -- pyroute2's order."""
    body = IFINFOMSG.pack(0, 0, index, flags, change)
    if name:
        body += str_attr(IFLA_IFNAME, name)
    body += attrs
    if kind is not None:
        info = str_attr(IFLA_INFO_KIND, kind)
        if peer is not None:
            peer_link = _EMPTY_IFINFOMSG + str_attr(IFLA_IFNAME, peer)
            info += attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_link))
        body += attr(IFLA_LINKINFO, info)
    header_flags = NLM_F_REQUEST | (NLM_F_ACK if ack else 0) | nl_flags
    length = NLMSG_HEADER.size + len(body)
    frame = bytearray(NLMSG_HEADER.pack(length, msg_type, header_flags, 0, 0))
    frame += body
    return frame
