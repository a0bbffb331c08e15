"""The backend interface: a few kernel-like primitives that fail with ``OSError(errno)``.

Backends behave like the kernel and know nothing about the protocol: the request handler
(:mod:`hycan._handler`) turns their errno values into hycan errors with actionable messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from hycan._status import LinkStatus

__all__ = ["Backend", "LinkStatus"]

if TYPE_CHECKING:
    from hycan._canconfig import CanSettings


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

    def kind(self, name: str) -> str | None:
        """The link's kind ("vcan", "veth", ...; None for a plain device); ENODEV if missing.

        What the policy checks before acting on a name (may be cached: a kind never
        changes, but the link a name refers to can)."""

    def close(self) -> None:
        """Release kernel resources."""
