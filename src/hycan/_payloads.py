"""Reading the JSON payloads of CREATE_LINK, LIST and ROUTE (docs/protocol.md), strictly:
an unknown key or a value of the wrong type is an :class:`InvalidArgument` naming it."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from hycan._canconfig import json_object
from hycan._names import name_problem
from hycan.errors import InvalidArgument, InvalidName

CAN_EFF_FLAG = 0x80000000
CAN_EFF_MASK = 0x1FFFFFFF
CAN_SFF_MASK = 0x7FF


def _object(payload: bytes, op: str, known: tuple[str, ...]) -> dict[str, Any]:
    """A payload that must be a JSON object of ``known`` keys (empty: ``{}``)."""
    data = json_object(payload, f"invalid {op} payload") if payload else {}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise InvalidArgument(
            f"invalid {op} payload: unknown key {json.dumps(unknown[0])[:40]} "
            f"(known: {', '.join(known)})"
        )
    return data


def _flag(data: dict[str, Any], op: str, key: str) -> bool:
    value = data.get(key, False)
    if type(value) is not bool:
        raise InvalidArgument(f'invalid {op} payload: "{key}" must be true or false')
    return value


def _link_name(data: dict[str, Any], op: str, key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if type(value) is not str:
        raise InvalidArgument(f'invalid {op} payload: "{key}" must be a link name')
    problem = name_problem(value.encode("utf-8", "surrogatepass"))
    if problem is not None:
        raise InvalidName(f'"{key}": {problem}')
    return value


class CreateOptions(NamedTuple):
    """CREATE_LINK's ``{"kind": "vcan", "lease": bool, "peer": NAME, "up": bool}``."""

    kind: str = "vcan"
    lease: bool = False
    peer: str | None = None  # a vxcan's other end, in the daemon's namespace
    up: bool = False  # bring it up in the same kernel call


def create_options(payload: bytes) -> CreateOptions:
    """Parse CREATE_LINK's payload."""
    data = _object(payload, "CREATE_LINK", ("kind", "lease", "peer", "up"))
    kind = data.get("kind", "vcan")
    if type(kind) is not str:
        raise InvalidArgument('invalid CREATE_LINK payload: "kind" must be a string')
    return CreateOptions(
        kind,
        _flag(data, "CREATE_LINK", "lease"),
        _link_name(data, "CREATE_LINK", "peer"),
        _flag(data, "CREATE_LINK", "up"),
    )


def list_after(payload: bytes) -> int:
    """LIST's ``{"after": ifindex}`` (0 when absent): where the page starts."""
    data = json_object(payload, "invalid LIST payload") if payload else {}
    after = data.get("after", 0)
    if set(data) - {"after"} or type(after) is not int or not 0 <= after <= 0x7FFFFFFF:
        raise InvalidArgument('invalid LIST payload: expected {"after": IFINDEX} or nothing')
    return after


class RouteOptions(NamedTuple):
    """ROUTE's ``{"action": "add"|"del", "dst": NAME, "both": bool, "can_id": ID,
    "mask": MASK, "fd": bool, "lease": bool}``."""

    add: bool
    dst: str
    both: bool = False
    can_id: int | None = None
    mask: int | None = None
    fd: bool = False
    lease: bool = False


def exact_mask(can_id: int) -> int:
    """The filter mask that passes exactly ``can_id`` (standard or, with CAN_EFF_FLAG,
    extended), data and remote frames alike."""
    return CAN_EFF_FLAG | (CAN_EFF_MASK if can_id & CAN_EFF_FLAG else CAN_SFF_MASK)


def route_options(payload: bytes) -> RouteOptions:
    """Parse ROUTE's payload (a ``mask`` without ``can_id`` is refused; a ``can_id``
    without ``mask`` passes exactly that ID)."""
    op = "ROUTE"
    data = _object(payload, op, ("action", "dst", "both", "can_id", "mask", "fd", "lease"))
    action = data.get("action")
    if action not in ("add", "del"):
        raise InvalidArgument('invalid ROUTE payload: "action" must be "add" or "del"')
    dst = _link_name(data, op, "dst")
    if dst is None:
        raise InvalidArgument('invalid ROUTE payload: "dst" (the other link) is missing')
    can_id, mask = data.get("can_id"), data.get("mask")
    for key, value in (("can_id", can_id), ("mask", mask)):
        if value is not None and (type(value) is not int or not 0 <= value <= 0xFFFFFFFF):
            raise InvalidArgument(f'invalid ROUTE payload: "{key}" must be a u32 number')
    if can_id is None and mask is not None:
        raise InvalidArgument('invalid ROUTE payload: "mask" needs "can_id"')
    if can_id is not None and mask is None:
        mask = exact_mask(can_id)
    return RouteOptions(
        action == "add",
        dst,
        _flag(data, op, "both"),
        can_id,
        mask,
        _flag(data, op, "fd"),
        _flag(data, op, "lease"),
    )


def no_payload(payload: bytes, op: str) -> None:
    """An op whose payload must be empty or ``{}``."""
    _object(payload, op, ())
