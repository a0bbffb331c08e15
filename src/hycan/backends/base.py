"""The backend interface: a few kernel-like primitives that fail with ``OSError(errno)``.

Backends behave like the kernel and know nothing about the protocol: the request handler
(:mod:`hycan._handler`) turns their errno values into hycan errors with actionable messages.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from hycan._canconfig import CanSettings


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """What STATUS reports about one link."""

    name: str
    exists: bool
    kind: str | None = None  # IFLA_INFO_KIND, e.g. "vcan", "veth"; None for plain devices
    up: bool | None = None  # administrative state (IFF_UP)
    operstate: str | None = None  # RFC 2863 state as the kernel reports it, e.g. "UP"
    mtu: int | None = None
    index: int | None = None
    can: dict[str, Any] | None = None  # kind "can" only: bitrate, fd, state, ...

    def to_json(self) -> str:
        """Compact JSON, the STATUS success message."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> LinkStatus:
        """Parse a STATUS message (unknown keys from newer daemons are ignored)."""
        data = json.loads(text)
        fields = cls.__dataclass_fields__
        return cls(**{key: value for key, value in data.items() if key in fields})


class Backend(Protocol):
    """Kernel-facing primitives. Errors are ``OSError`` with the kernel's errno."""

    def add_link(self, name: str, kind: str) -> None:
        """Create a link of ``kind`` (EEXIST if the name is taken, EOPNOTSUPP if unknown)."""

    def set_up(self, name: str, up: bool) -> None:
        """Set or clear IFF_UP (ENODEV if missing)."""

    def delete_link(self, name: str) -> None:
        """Delete a link (ENODEV if missing)."""

    def set_mtu(self, name: str, mtu: int) -> None:
        """Set the MTU (vcan: 16 or 72, only while down: EINVAL / EBUSY)."""

    def set_can(self, name: str, settings: CanSettings) -> None:
        """Apply CAN controller settings (EOPNOTSUPP on non-CAN links, EBUSY while up)."""

    def restart_can(self, name: str) -> None:
        """Restart a bus-off CAN controller (EBUSY if it is not bus-off)."""

    def status(self, name: str) -> LinkStatus:
        """Describe a link; ``exists=False`` if there is none."""

    def close(self) -> None:
        """Release kernel resources."""
