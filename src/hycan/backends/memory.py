"""A simulated kernel for tests and demos: no privileges, same rules and errno as Linux."""

from __future__ import annotations

import contextlib
import copy
import errno
import os
from dataclasses import dataclass
from typing import Any

from hycan._canconfig import CAN_STATS, CTRLMODES, CanSettings
from hycan._netns import Netns
from hycan.backends.base import LinkRef, LinkStatus, Route

CAN_MTU, CANFD_MTU = 16, 72

# Default MTU of a new link by kind, as the kernel sets it (vcan defaults to CAN FD).
_DEFAULT_MTU = {"vcan": 72, "vxcan": 72, "veth": 1500, "bridge": 1500}
_PAIRED = frozenset({"vxcan", "veth"})  # kinds created with a peer, deleted with it
_CAN_KINDS = frozenset({"vcan", "vxcan", "can"})  # what a CAN gateway route may join


@dataclass
class _Link:
    index: int
    kind: str | None
    mtu: int
    up: bool = False
    can: dict[str, Any] | None = None
    alias: str | None = None
    peer: tuple[MemoryBackend, int] | None = None  # a pair's other end: (namespace, index)


def _new_controller(modes: tuple[str, ...], terminations: tuple[int, ...]) -> dict[str, Any]:
    """The ``can`` part of STATUS of a controller that was just plugged in (docs/can.md)."""
    return {
        "state": "STOPPED",
        "berr_counter": {"tx": 0, "rx": 0},
        "bitrate": 0,
        "sample_point": None,
        "timing": None,
        "data_bitrate": 0,
        "data_sample_point": None,
        "data_timing": None,
        "fd": False,
        "modes": [],
        "modes_supported": list(modes),
        "clock": 80_000_000,
        "timing_const": None,
        "data_timing_const": None,
        "bitrates_supported": [],
        "bitrate_max": None,
        "tdc": None,
        "restart_ms": 0,
        "termination": terminations[0] if terminations else None,
        "terminations_supported": list(terminations),
        "stats": dict.fromkeys(CAN_STATS, 0),
        "frames": None,
    }


class MemoryMonitor:
    """Link changes of a :class:`MemoryBackend`, signalled on a pipe like a socket's
    readiness (so the daemon waits on it as on the kernel's)."""

    def __init__(self, capacity: int = 4096) -> None:
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._changes: list[LinkStatus] = []
        self._capacity = capacity
        self._lost = False
        self.closed = False

    def fileno(self) -> int:
        """Readable while changes are pending."""
        return self._read_fd

    def push(self, status: LinkStatus) -> None:
        """Record one change (beyond ``capacity`` unread ones: lost, like ENOBUFS)."""
        if len(self._changes) >= self._capacity:
            self._lost = True
            self._changes.clear()
        self._changes.append(status)
        with contextlib.suppress(BlockingIOError):  # full: readable already
            os.write(self._write_fd, b"!")

    def read(self) -> list[LinkStatus] | None:
        """The changes since the last read, or None if some were lost."""
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        changes, self._changes = self._changes, []
        lost, self._lost = self._lost, False
        return None if lost else changes

    def close(self) -> None:
        """Close the pipe."""
        self.closed = True
        os.close(self._read_fd)
        os.close(self._write_fd)


def _fail(code: int, name: str) -> OSError:
    return OSError(code, os.strerror(code), name)


class MemoryBackend:
    """In-memory links. Starts like a host: ``lo`` (up) and ``eth0`` (up), neither a vcan.

    ``vcan_available=False`` simulates a kernel without the vcan module. Links may carry
    altnames (:meth:`add_altname`), which name them everywhere a name is accepted, as in Linux.
    Other network namespaces (:meth:`for_netns`) start with only ``lo`` (down), like new
    ones in Linux; a vxcan or veth created in one has its peer here. CAN gateway routes
    exist in this (the daemon's) namespace only, and go with either of their links.
    """

    def __init__(self, *, vcan_available: bool = True, host: MemoryBackend | None = None) -> None:
        self.vcan_available = vcan_available
        self._host = host  # the daemon's namespace, for a namespace made by for_netns
        self._namespaces: dict[int, MemoryBackend] = {}
        self.route_table: list[Route] = []
        self._links: dict[str, _Link] = (
            {"lo": _Link(1, None, 65536)}
            if host is not None
            else {"lo": _Link(1, None, 65536, up=True), "eth0": _Link(2, None, 1500, up=True)}
        )
        self._altnames: dict[str, str] = {}  # altname -> the link's name
        self._by_index = {link.index: name for name, link in self._links.items()}
        self._next_index = 3
        self._monitors: list[MemoryMonitor] = []

    def for_netns(self, netns: Netns) -> MemoryBackend:
        """The namespace ``netns`` names (made on first use, kept like a kernel's)."""
        host = self._host or self
        found = host._namespaces.get(netns.inode)
        if found is None:
            found = host._namespaces[netns.inode] = MemoryBackend(
                vcan_available=self.vcan_available, host=host
            )
        return found

    def add_link(self, name: str, kind: str, peer: str | None = None, up: bool = False) -> None:
        """Create a link (up at once if ``up``); EEXIST if taken, EOPNOTSUPP for kinds this
        kernel lacks. A vxcan or veth gets its ``peer`` in the daemon's namespace."""
        can_module = kind in ("vcan", "vxcan")
        if kind not in _DEFAULT_MTU or (can_module and not self.vcan_available):
            raise _fail(errno.EOPNOTSUPP, name)
        if peer is not None and kind not in _PAIRED:
            raise _fail(errno.EINVAL, name)
        host = self._host or self
        taken = [(self, name)] + ([(host, peer)] if peer is not None else [])
        for space, wanted in taken:
            if wanted in space._links or wanted in space._altnames:
                raise _fail(errno.EEXIST, wanted)
        if peer is not None and host is self and peer == name:
            raise _fail(errno.EEXIST, peer)
        link = _Link(self._next_index, kind, _DEFAULT_MTU[kind], up=up)
        self._add(name, link)
        if peer is not None:
            other = _Link(host._next_index, kind, _DEFAULT_MTU[kind], peer=(self, link.index))
            host._add(peer, other)
            link.peer = (host, other.index)

    def add_altname(self, name: str, altname: str) -> None:
        """Give link ``name`` another name, as ``ip link property add ... altname`` does."""
        self._get(name)
        if altname in self._links or altname in self._altnames:
            raise _fail(errno.EEXIST, altname)
        self._altnames[altname] = name

    def resolve(self, name: str) -> LinkRef:
        """The link ``name`` (or an altname) means; ENODEV if none."""
        own = self._altnames.get(name, name)
        link = self._get(own)
        return LinkRef(link.index, own, link.kind, link.alias)

    def set_alias(self, link: LinkRef, alias: str) -> None:
        """Set the alias, as ``ip link set NAME alias TEXT`` (an empty one clears it)."""
        self._at(link)[1].alias = alias or None

    def links(self) -> list[LinkStatus]:
        """Every link, in index order."""
        return [self.status(name) for _, name in sorted(self._by_index.items())]

    def set_up(self, link: LinkRef, up: bool) -> None:
        """Set the administrative state; ENODEV if gone. A CAN controller starts
        (ERROR-ACTIVE) and stops (STOPPED) with it."""
        name, found = self._at(link)
        found.up = up
        if found.can is not None:
            found.can["state"] = "ERROR-ACTIVE" if up else "STOPPED"
        self._changed(name)

    def delete_link(self, link: LinkRef) -> None:
        """Remove a link (and a pair's peer); ENODEV if gone, EOPNOTSUPP for devices that
        can't be deleted."""
        name, found = self._at(link)
        if found.kind is None:
            raise _fail(errno.EOPNOTSUPP, name)
        self._remove(name, found)
        if found.peer is not None:
            space, index = found.peer
            peer_name = space._by_index.get(index)
            if peer_name is not None:
                space._remove(peer_name, space._links[peer_name])

    def _remove(self, name: str, link: _Link) -> None:
        del self._links[name], self._by_index[link.index]
        self._changed(name, gone=link.index)
        self._altnames = {alt: own for alt, own in self._altnames.items() if own != name}
        self.route_table = [r for r in self.route_table if link.index not in (r.src, r.dst)]

    def add_route(self, route: Route) -> None:
        """Add a CAN gateway route; ENODEV unless both ends are CAN links here."""
        if self._host is not None:
            raise _fail(errno.EOPNOTSUPP, "route")
        for index in (route.src, route.dst):
            name = self._by_index.get(index)
            if name is None or self._links[name].kind not in _CAN_KINDS:
                raise _fail(errno.ENODEV, name or str(index))
        self.route_table.append(route._replace(handled=0, dropped=0))

    def delete_route(self, route: Route) -> None:
        """Delete the first job ``route`` describes; EINVAL if there is none."""
        for position, existing in enumerate(self.route_table):
            if existing.same_job(route):
                del self.route_table[position]
                return
        raise _fail(errno.EINVAL, "route")

    def routes(self) -> list[Route]:
        """Every CAN gateway route, oldest first."""
        return list(self.route_table)

    def plug_can_adapter(
        self,
        name: str,
        *,
        modes: tuple[str, ...] = (*CTRLMODES, "tdc_auto", "tdc_manual"),
        terminations: tuple[int, ...] = (0, 120),
    ) -> None:
        """Simulate hardware: a real CAN controller ``name`` appears (kind "can", down),
        which supports these control ``modes`` and termination resistances (ohms)."""
        can = _new_controller(modes, terminations)
        self._add(name, _Link(self._next_index, "can", CAN_MTU, can=can))

    def set_mtu(self, ref: LinkRef, mtu: int) -> None:
        """vcan takes 16 or 72 while down (EINVAL / EBUSY); others 68..65535."""
        name, link = self._at(ref)
        if link.kind in ("vcan", "can"):
            if link.up:
                raise _fail(errno.EBUSY, name)
            allowed = (CAN_MTU, CANFD_MTU) if link.kind == "vcan" else (link.mtu,)
            if mtu not in allowed:
                raise _fail(errno.EINVAL, name)
        elif not 68 <= mtu <= 65535:
            raise _fail(errno.EINVAL, name)
        link.mtu = mtu

    def set_can(self, ref: LinkRef, settings: CanSettings) -> None:
        """Only kind "can" has bit timing (EOPNOTSUPP), as has a mode or termination the
        controller lacks; timing and modes need the link down (EBUSY); a termination it
        does not offer is EINVAL."""
        name, link = self._at(ref)
        can = link.can
        if link.kind != "can" or can is None:
            raise _fail(errno.EOPNOTSUPP, name)
        modes = settings.modes()
        if settings.tdc_mode not in (None, "off"):
            modes[f"tdc_{settings.tdc_mode}"] = True
        wanted = {mode for mode, on in modes.items() if on}
        if wanted - set(can["modes_supported"]):
            raise _fail(errno.EOPNOTSUPP, name)
        if settings.termination is not None and settings.termination not in (
            terminations := can["terminations_supported"]
        ):
            raise _fail(errno.EINVAL if terminations else errno.EOPNOTSUPP, name)
        changes_timing = settings.timing() or settings.timing(data=True) or modes
        if link.up and changes_timing:
            raise _fail(errno.EBUSY, name)
        for data in (False, True):
            prefix = "data_" if data else ""
            timing = settings.timing(data=data)
            if timing is not None:
                can[prefix + "bitrate"] = timing.get("bitrate", 0)
                point = timing.get("sample_point")
                can[prefix + "sample_point"] = None if point is None else point / 1000
        on = (set(can["modes"]) | wanted) - {mode for mode, v in modes.items() if not v}
        can["modes"] = [mode for mode in can["modes_supported"] if mode in on]
        can["fd"] = "fd" in on
        for key in ("restart_ms", "termination"):
            if (value := getattr(settings, key)) is not None:
                can[key] = value
        link.mtu = CANFD_MTU if can["fd"] else CAN_MTU

    def restart_can(self, ref: LinkRef) -> None:
        """EOPNOTSUPP on non-CAN links, EINVAL while down, EBUSY unless bus-off."""
        name, link = self._at(ref)
        if link.kind != "can" or link.can is None:
            raise _fail(errno.EOPNOTSUPP, name)
        if not link.up:
            raise _fail(errno.EINVAL, name)
        if link.can["state"] != "BUS-OFF":
            raise _fail(errno.EBUSY, name)
        link.can["state"] = "ERROR-ACTIVE"
        link.can["stats"]["restarts"] += 1
        self._changed(name)

    def status(self, name: str) -> LinkStatus:
        """Describe a link (by its name or an altname; reported under its own name)."""
        name = self._altnames.get(name, name)
        link = self._links.get(name)
        if link is None:
            return LinkStatus(name, exists=False)
        # Devices without carrier handling (lo, vcan) report "UNKNOWN" when up, like Linux.
        carrier = "UNKNOWN" if link.kind in (None, "vcan") and name != "eth0" else "UP"
        return LinkStatus(
            name,
            exists=True,
            kind=link.kind,
            up=link.up,
            operstate=carrier if link.up else "DOWN",
            mtu=link.mtu,
            ifindex=link.index,
            can=copy.deepcopy(link.can),
            alias=link.alias,
        )

    def monitor(self) -> MemoryMonitor:
        """Listen to this namespace's link changes (closing it stops them)."""
        monitor = MemoryMonitor()
        self._monitors.append(monitor)
        return monitor

    def set_can_state(self, name: str, state: str) -> None:
        """Simulate the bus: controller ``name`` enters CAN ``state`` (e.g. "BUS-OFF"),
        which the kernel announces only for bus-off and restarts (others are polled)."""
        name, link = self._at(self.resolve(name))
        assert link.can is not None, f"{name} is not a CAN controller"
        link.can["state"] = state
        if state == "BUS-OFF":
            self._changed(name)

    def _changed(self, name: str, gone: int | None = None) -> None:
        """Announce link ``name``'s new state (or, ``gone``: that index was deleted)."""
        self._monitors = [m for m in self._monitors if not m.closed]
        if not self._monitors:
            return
        status = self.status(name) if gone is None else LinkStatus(name, False, ifindex=gone)
        for monitor in self._monitors:
            monitor.push(status)

    def close(self) -> None:
        """Nothing to release."""

    def _get(self, name: str) -> _Link:
        link = self._links.get(name)
        if link is None:
            raise _fail(errno.ENODEV, name)
        return link

    def _add(self, name: str, link: _Link) -> None:
        self._links[name] = link
        self._by_index[link.index] = name
        self._next_index += 1
        self._changed(name)

    def _at(self, ref: LinkRef) -> tuple[str, _Link]:
        """The link with ``ref``'s index, whatever its name is now (ENODEV if gone)."""
        name = self._by_index.get(ref.ifindex)
        if name is None:
            raise _fail(errno.ENODEV, ref.name)
        return name, self._links[name]
