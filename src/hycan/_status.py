"""What STATUS and PING report: LinkStatus (shared by clients and backends), and the
clients' strict reading of both replies (anything unexpected is a ``ProtocolError``)."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from hycan.errors import ProtocolError

COMPACT = json.JSONEncoder(separators=(",", ":"))  # json.dumps(separators=) builds one a call
_DECODE = json.JSONDecoder().decode  # json.loads() checks its arguments on every call


class LinkStatus(NamedTuple):
    """What STATUS reports about one link (JSON key ``index`` is ``ifindex`` here)."""

    name: str
    exists: bool
    kind: str | None = None  # IFLA_INFO_KIND, e.g. "vcan", "veth"; None for plain devices
    up: bool | None = None  # administrative state (IFF_UP)
    operstate: str | None = None  # RFC 2863 state as the kernel reports it, e.g. "UP"
    mtu: int | None = None
    ifindex: int | None = None
    can: dict[str, Any] | None = None  # kind "can" only: bitrate, fd, state, ...
    alias: str | None = None  # IFLA_IFALIAS, where hycan records the owner
    owner: int | None = None  # the uid that created it through hycan; None: nobody
    lease: bool | None = None  # whether it goes when its creator's connection closes

    def to_dict(self) -> dict[str, Any]:
        """The fields under their wire names (as in the STATUS JSON)."""
        data = self._asdict()
        data["index"] = data.pop("ifindex")
        return data

    def to_json(self) -> str:
        """Compact JSON, the STATUS success message."""
        return COMPACT.encode(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> LinkStatus:
        """Parse a STATUS message: unknown keys (from newer daemons) are ignored, a missing
        optional key is None, anything else unexpected raises ``ProtocolError``."""
        data = json_reply("STATUS", text)
        check_fields("STATUS", data, _STATUS_FIELDS)
        return cls(
            data["name"],
            data["exists"],
            data.get("kind"),
            data.get("up"),
            data.get("operstate"),
            data.get("mtu"),
            data.get("index"),
            data.get("can"),
            data.get("alias"),
            data.get("owner"),
            data.get("lease"),
        )


# wire key -> (JSON type, required); a key that is not required may also be null.
FieldSpec = dict[str, tuple[type, bool]]
_STATUS_FIELDS: FieldSpec = {
    "name": (str, True),
    "exists": (bool, True),
    "kind": (str, False),
    "up": (bool, False),
    "operstate": (str, False),
    "mtu": (int, False),
    "index": (int, False),
    "can": (dict, False),
    "alias": (str, False),
    "owner": (int, False),
    "lease": (bool, False),
}
_PING_FIELDS: FieldSpec = {"protocol": (int, True), "version": (str, True), "backend": (str, True)}
_TYPE_NAMES = {
    str: "a string",
    bool: "true or false",
    int: "an integer",
    dict: "an object",
    list: "an array",
}


class LinkEntry(NamedTuple):
    """One link of a LIST reply: what ``hycan list`` shows."""

    name: str
    ifindex: int  # JSON key "index"
    kind: str | None
    up: bool
    owner: int | None  # uid, None when nobody owns it
    owner_name: str | None  # that uid's account name, if it has one
    lease: bool
    may: tuple[str, ...]  # what the caller may do to it: "up", "down", "delete", ...

    def to_dict(self) -> dict[str, Any]:
        """The entry under its wire names (as in the LIST JSON)."""
        data = self._asdict()
        data["index"] = data.pop("ifindex")
        data["may"] = list(self.may)
        return data


_ENTRY_FIELDS: FieldSpec = {
    "name": (str, True),
    "index": (int, True),
    "kind": (str, False),
    "up": (bool, True),
    "owner": (int, False),
    "owner_name": (str, False),
    "lease": (bool, True),
    "may": (list, True),
}


def parse_list(text: str) -> tuple[list[LinkEntry], int | None]:
    """Parse a LIST message: its entries and where the next page starts (None: last)."""
    data = json_reply("LIST", text)
    links, following = data.get("links"), data.get("next")
    if type(links) is not list or not (following is None or type(following) is int):
        raise _malformed("LIST", 'expected {"links": [...], "next": int or null}')
    entries = []
    for item in links:
        if type(item) is not dict:
            raise _malformed("LIST", "an entry is not an object")
        check_fields("LIST", item, _ENTRY_FIELDS)
        may = item["may"]
        if not all(type(verb) is str for verb in may):
            raise _malformed("LIST", "'may' holds something other than strings")
        entries.append(
            LinkEntry(
                item["name"],
                item["index"],
                item.get("kind"),
                item["up"],
                item.get("owner"),
                item.get("owner_name"),
                item["lease"],
                tuple(may),
            )
        )
    return entries, following


def ping_info(text: str) -> dict[str, Any]:
    """Parse a PING message: an object with ``protocol`` (int), ``version`` and ``backend``
    (strings), and possibly more keys; anything else raises ``ProtocolError``."""
    data = json_reply("PING", text)
    # One expression first, not the loop: PING is what health checks and benchmarks call.
    if not (
        type(data.get("protocol")) is int
        and type(data.get("version")) is str
        and type(data.get("backend")) is str
    ):
        check_fields("PING", data, _PING_FIELDS)  # raises, naming the field
    return data


def _malformed(op: str, problem: str) -> ProtocolError:
    return ProtocolError(
        f"the daemon's {op} reply is malformed ({problem}): is the process serving this "
        "socket a hycan-daemon of a compatible version?"
    )


def json_reply(op: str, text: str) -> dict[str, Any]:
    try:
        data = _DECODE(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise _malformed(op, f"not JSON: {str(exc)[:80]}") from None
    if type(data) is not dict:
        raise _malformed(op, f"a JSON {type(data).__name__}, not an object")
    return data


def check_fields(op: str, data: dict[str, Any], spec: FieldSpec) -> None:
    # `type() is` and not isinstance(): JSON true is not an integer here.
    for key, (kind, required) in spec.items():
        value = data.get(key)
        if type(value) is kind or (value is None and not required):
            continue
        if value is None:
            problem = f"{key!r} is missing" if key not in data else f"{key!r} is null"
        else:
            expected = _TYPE_NAMES[kind] + ("" if required else " or null")
            problem = f"{key!r} is {_describe(value)}, expected {expected}"
        raise _malformed(op, problem)


def _describe(value: object) -> str:
    if isinstance(value, list | dict):
        return "an array" if isinstance(value, list) else "an object"
    return json.dumps(value)[:40]


class RouteEntry(NamedTuple):
    """One CAN gateway route of a ROUTES reply: what ``hycan route list`` shows."""

    src: str  # the link frames come from (its ifindex as text if it is gone)
    dst: str  # the link they are sent on
    can_id: int | None  # filter: only frames whose ID matches can_id under mask
    mask: int | None
    fd: bool  # CAN FD frames (else classic ones)
    echo: bool  # local sockets on dst see routed frames
    handled: int  # frames routed so far
    dropped: int  # frames the kernel could not route
    owner: int | None  # uid owning one end
    lease: bool  # whether it goes when a connection closes

    def to_dict(self) -> dict[str, Any]:
        """The entry under its wire names (as in the ROUTES JSON)."""
        return self._asdict()


_ROUTE_FIELDS: FieldSpec = {
    "src": (str, True),
    "dst": (str, True),
    "can_id": (int, False),
    "mask": (int, False),
    "fd": (bool, True),
    "echo": (bool, True),
    "handled": (int, True),
    "dropped": (int, True),
    "owner": (int, False),
    "lease": (bool, True),
}


def parse_routes(text: str) -> list[RouteEntry]:
    """Parse a ROUTES message (anything unexpected raises ``ProtocolError``)."""
    data = json_reply("ROUTES", text)
    routes = data.get("routes")
    if type(routes) is not list:
        raise _malformed("ROUTES", 'expected {"routes": [...]}')
    entries = []
    for item in routes:
        if type(item) is not dict:
            raise _malformed("ROUTES", "an entry is not an object")
        check_fields("ROUTES", item, _ROUTE_FIELDS)
        values: dict[str, Any] = {key: item.get(key) for key in _ROUTE_FIELDS}
        entries.append(RouteEntry(**values))
    return entries
