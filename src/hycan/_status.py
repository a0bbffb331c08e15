"""LinkStatus: what STATUS reports about a link (shared by clients and backends)."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

_COMPACT = json.JSONEncoder(separators=(",", ":"))  # json.dumps(separators=) builds one a call


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

    def to_dict(self) -> dict[str, Any]:
        """The fields under their wire names (as in the STATUS JSON)."""
        data = self._asdict()
        data["index"] = data.pop("ifindex")
        return data

    def to_json(self) -> str:
        """Compact JSON, the STATUS success message."""
        return _COMPACT.encode(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> LinkStatus:
        """Parse a STATUS message (unknown keys from newer daemons are ignored)."""
        data = json.loads(text)
        data["ifindex"] = data.pop("index", None)
        return cls(**{key: value for key, value in data.items() if key in _FIELDS})


_FIELDS = frozenset(LinkStatus._fields)
