"""CAN gateway (can-gw) routes over rtnetlink, as ``cangw`` sets them: ``linux/can/gw.h``.

pyroute2 has no message class for these, so :class:`rtcanmsg` defines one on pyroute2's
``nlmsg``/``nla`` classes: ``struct rtcanmsg {u8 can_family; u8 gwtype; u16 flags;}``
followed by ``CGW_*`` attributes. A route is one CAN->CAN job: frames received on
``CGW_SRC_IF`` that pass the ``CGW_FILTER`` are sent on ``CGW_DST_IF``.

hycan sets only what it offers (source, destination, an optional CAN-ID filter, classic
or CAN FD frames) and ``CGW_FLAGS_CAN_ECHO`` on the routes it makes, so local sockets on
the destination see routed frames as if sent there (``cangw -e``; a vcan shows them to
nobody without it).
The kernel deletes a job only when every field matches (flags and filter included), and
a delete naming neither interface flushes **every** job of the namespace, so deletes are
always built from a complete :class:`~hycan.backends.base.Route`.
"""

from __future__ import annotations

import socket
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST, nla, nlmsg
from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_GETROUTE, RTM_NEWROUTE

from hycan.backends.base import Route

AF_CAN = getattr(socket, "AF_CAN", 29)
CGW_TYPE_CAN_CAN = 1
CGW_FLAGS_CAN_ECHO = 0x01
CGW_FLAGS_CAN_FD = 0x08
CAN_EFF_FLAG = 0x80000000
CAN_EFF_MASK = 0x1FFFFFFF


class rtcanmsg(nlmsg):  # type: ignore[misc]  # noqa: N801 (named as in linux/can/gw.h)
    """A CAN gateway job message (RTM_NEWROUTE / RTM_DELROUTE / RTM_GETROUTE)."""

    prefix = "CGW_"
    fields = (("can_family", "B"), ("gwtype", "B"), ("flags", "H"))
    nla_map = (
        ("CGW_UNSPEC", "none"),
        ("CGW_MOD_AND", "hex"),
        ("CGW_MOD_OR", "hex"),
        ("CGW_MOD_XOR", "hex"),
        ("CGW_MOD_SET", "hex"),
        ("CGW_CS_XOR", "hex"),
        ("CGW_CS_CRC8", "hex"),
        ("CGW_HANDLED", "uint32"),
        ("CGW_DROPPED", "uint32"),
        ("CGW_SRC_IF", "uint32"),
        ("CGW_DST_IF", "uint32"),
        ("CGW_FILTER", "can_filter"),
        ("CGW_DELETED", "uint32"),
        ("CGW_LIM_HOPS", "uint8"),
        ("CGW_MOD_UID", "uint32"),
        ("CGW_FDMOD_AND", "hex"),
        ("CGW_FDMOD_OR", "hex"),
        ("CGW_FDMOD_XOR", "hex"),
        ("CGW_FDMOD_SET", "hex"),
    )

    class can_filter(nla):  # type: ignore[misc]  # noqa: N801
        """``struct can_filter {canid_t can_id; canid_t can_mask;}`` (host byte order)."""

        fields = (("can_id", "I"), ("can_mask", "I"))


def encode(msg_type: int, route: Route | None, seq: int) -> bytes:
    """RTM_NEWROUTE / RTM_DELROUTE for ``route``, or (``route`` None) an RTM_GETROUTE dump."""
    msg = rtcanmsg()
    msg["can_family"] = AF_CAN
    msg["gwtype"] = CGW_TYPE_CAN_CAN
    msg["flags"] = 0
    flags = NLM_F_REQUEST
    if route is None:
        if msg_type != RTM_GETROUTE:
            raise ValueError("only a dump may name no route")
        flags |= NLM_F_DUMP
    else:
        if msg_type not in (RTM_NEWROUTE, RTM_DELROUTE):
            raise ValueError(f"not a route change: {msg_type}")
        if not route.src or not route.dst:
            # The kernel reads a delete without interfaces as "flush every job".
            raise ValueError("a route needs both interfaces")
        msg["flags"] = (CGW_FLAGS_CAN_ECHO if route.echo else 0) | (
            CGW_FLAGS_CAN_FD if route.fd else 0
        )
        attrs: list[Any] = [("CGW_SRC_IF", route.src), ("CGW_DST_IF", route.dst)]
        if route.can_id is not None:
            attrs.append(("CGW_FILTER", {"can_id": route.can_id, "can_mask": route.mask}))
        msg["attrs"] = attrs
        flags |= NLM_F_ACK | (NLM_F_CREATE if msg_type == RTM_NEWROUTE else 0)
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def decode(data: bytes) -> Route | None:
    """A route from one RTM_NEWROUTE message of a dump (None if it is not a CAN->CAN
    job hycan could have made: other gateway types, frame modifications)."""
    msg = rtcanmsg(data)
    msg.decode()
    if msg["can_family"] != AF_CAN or msg["gwtype"] != CGW_TYPE_CAN_CAN:
        return None
    attrs = dict(msg["attrs"])
    if any(name.startswith(("CGW_MOD_", "CGW_FDMOD_", "CGW_CS_")) for name in attrs):
        return None
    found = attrs.get("CGW_FILTER")
    can_id = mask = None
    if found is not None and (found["can_id"], found["can_mask"]) != (0, 0):
        can_id, mask = found["can_id"], found["can_mask"]
    return Route(
        attrs.get("CGW_SRC_IF", 0),
        attrs.get("CGW_DST_IF", 0),
        can_id,
        mask,
        bool(msg["flags"] & CGW_FLAGS_CAN_FD),
        bool(msg["flags"] & CGW_FLAGS_CAN_ECHO),
        attrs.get("CGW_HANDLED", 0),
        attrs.get("CGW_DROPPED", 0) + attrs.get("CGW_DELETED", 0),
    )
