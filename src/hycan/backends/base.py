"""The backend interface: a few kernel-like primitives that fail with ``OSError(errno)``.

Backends behave like the kernel and know nothing about the protocol: the request handler
(:mod:`hycan._handler`) turns their errno values into hycan errors with actionable messages.

A name a client gives is resolved once (:meth:`Backend.resolve`) into the link the kernel
would act on: its index, its own name (a client may have given an altname) and its kind.
The policy judges that link, and every change is then made by index, so it lands on exactly
the link that was judged, whatever names it has or gets meanwhile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol

from hycan._status import LinkStatus

__all__ = ["Backend", "LinkMonitor", "LinkRef", "LinkStatus", "Route"]

if TYPE_CHECKING:
    from hycan._canconfig import CanSettings
    from hycan._netns import Netns


class LinkRef(NamedTuple):
    """A link as the kernel knows it."""

    ifindex: int
    name: str  # the kernel's name for it (IFLA_IFNAME), never an altname
    kind: str | None  # IFLA_INFO_KIND ("vcan", "veth", ...), None for a plain device
    alias: str | None = None  # IFLA_IFALIAS: where hycan records a link's owner (_owner)


class Route(NamedTuple):
    """A CAN gateway route (one can-gw job): frames received on link ``src`` (an ifindex)
    whose CAN ID matches ``can_id``/``mask`` (None: every frame) are sent on ``dst``; CAN
    FD frames if ``fd``, else classic ones. ``echo``: local sockets on ``dst`` see them.
    ``handled`` and ``dropped`` are the kernel's frame counters (ignored when matching)."""

    src: int
    dst: int
    can_id: int | None = None
    mask: int | None = None
    fd: bool = False
    echo: bool = True
    handled: int = 0
    dropped: int = 0

    def same_job(self, other: Route) -> bool:
        """Whether both describe one kernel job (counters aside)."""
        return self[:6] == other[:6]


class LinkMonitor(Protocol):
    """The link changes of one namespace, as the kernel announces them (for WATCH)."""

    def fileno(self) -> int:
        """A descriptor that is readable when changes are pending."""

    def read(self) -> list[LinkStatus] | None:
        """The statuses of the links that changed since the last read (a deleted link:
        ``exists`` False, with its ifindex), oldest first; None if changes were lost."""

    def close(self) -> None:
        """Stop listening."""


class Backend(Protocol):
    """Kernel-facing primitives. Errors are ``OSError`` with the kernel's errno."""

    def add_link(self, name: str, kind: str, peer: str | None = None, up: bool = False) -> None:
        """Create a link of ``kind`` (EEXIST if the name is taken, EOPNOTSUPP if unknown),
        up at once if ``up``. A vxcan gets its ``peer`` end in the daemon's namespace."""

    def for_netns(self, netns: Netns) -> Backend:
        """The same primitives acting in network namespace ``netns`` (a new backend the
        caller closes; ``netns.fd`` must stay open while it is used)."""

    def resolve(self, name: str) -> LinkRef:
        """The link the kernel means by ``name`` (its name or an altname); ENODEV if none."""

    def set_alias(self, link: LinkRef, alias: str) -> None:
        """Set the link's alias (IFLA_IFALIAS; ENODEV if it is gone)."""

    def links(self) -> list[LinkStatus]:
        """Every link of the namespace."""

    def set_up(self, link: LinkRef, up: bool) -> None:
        """Set or clear IFF_UP (ENODEV if it is gone)."""

    def delete_link(self, link: LinkRef) -> None:
        """Delete a link (ENODEV if it is gone)."""

    def set_mtu(self, link: LinkRef, mtu: int) -> None:
        """Set the MTU (vcan: 16 or 72, only while down: EINVAL / EBUSY)."""

    def set_can(self, link: LinkRef, settings: CanSettings) -> None:
        """Apply CAN controller settings (EOPNOTSUPP on non-CAN links, EBUSY while up)."""

    def restart_can(self, link: LinkRef) -> None:
        """Restart a bus-off CAN controller (EBUSY if it is not bus-off)."""

    def add_route(self, route: Route) -> None:
        """Add a CAN gateway route (ENODEV: no such link; EOPNOTSUPP: can-gw missing)."""

    def delete_route(self, route: Route) -> None:
        """Delete the CAN gateway job ``route`` describes (EINVAL if there is none)."""

    def routes(self) -> list[Route]:
        """Every CAN->CAN gateway route of the namespace."""

    def status(self, name: str) -> LinkStatus:
        """Describe a link; ``exists=False`` if there is none."""

    def monitor(self) -> LinkMonitor:
        """Start listening to the namespace's link changes (the caller closes it)."""

    def close(self) -> None:
        """Release kernel resources."""
