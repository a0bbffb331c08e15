"""A simulated kernel for tests and demos: no privileges, same rules and errno as Linux."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any

from hycan._canconfig import CanSettings
from hycan.backends.base import LinkStatus

CAN_MTU, CANFD_MTU = 16, 72

# Default MTU of a new link by kind, as the kernel sets it (vcan defaults to CAN FD).
_DEFAULT_MTU = {"vcan": 72, "veth": 1500, "bridge": 1500}


@dataclass
class _Link:
    index: int
    kind: str | None
    mtu: int
    up: bool = False
    can: dict[str, Any] | None = None


def _default_can() -> dict[str, Any]:
    return {
        "bitrate": 0,
        "sample_point": None,
        "data_bitrate": 0,
        "data_sample_point": None,
        "fd": False,
        "restart_ms": 0,
        "state": "STOPPED",
    }


def _fail(code: int, name: str) -> OSError:
    return OSError(code, os.strerror(code), name)


class MemoryBackend:
    """In-memory links. Starts like a host: ``lo`` (up) and ``eth0`` (up), neither a vcan.

    ``vcan_available=False`` simulates a kernel without the vcan module.
    """

    def __init__(self, *, vcan_available: bool = True) -> None:
        self.vcan_available = vcan_available
        self._links: dict[str, _Link] = {
            "lo": _Link(1, None, 65536, up=True),
            "eth0": _Link(2, None, 1500, up=True),
        }
        self._next_index = 3

    def add_link(self, name: str, kind: str) -> None:
        """Create a link; EEXIST if taken, EOPNOTSUPP for kinds this kernel lacks."""
        if kind not in _DEFAULT_MTU or (kind == "vcan" and not self.vcan_available):
            raise _fail(errno.EOPNOTSUPP, name)
        if name in self._links:
            raise _fail(errno.EEXIST, name)
        self._links[name] = _Link(self._next_index, kind, _DEFAULT_MTU[kind])
        self._next_index += 1

    def set_up(self, name: str, up: bool) -> None:
        """Set the administrative state; ENODEV if missing."""
        self._get(name).up = up

    def delete_link(self, name: str) -> None:
        """Remove a link; ENODEV if missing, EOPNOTSUPP for devices that can't be deleted."""
        if self._get(name).kind is None:
            raise _fail(errno.EOPNOTSUPP, name)
        del self._links[name]

    def plug_can_adapter(self, name: str) -> None:
        """Simulate hardware: a real CAN controller ``name`` appears (kind "can", down)."""
        self._links[name] = _Link(self._next_index, "can", CAN_MTU, can=_default_can())
        self._next_index += 1

    def set_mtu(self, name: str, mtu: int) -> None:
        """vcan takes 16 or 72 while down (EINVAL / EBUSY); others 68..65535."""
        link = self._get(name)
        if link.kind in ("vcan", "can"):
            if link.up:
                raise _fail(errno.EBUSY, name)
            allowed = (CAN_MTU, CANFD_MTU) if link.kind == "vcan" else (link.mtu,)
            if mtu not in allowed:
                raise _fail(errno.EINVAL, name)
        elif not 68 <= mtu <= 65535:
            raise _fail(errno.EINVAL, name)
        link.mtu = mtu

    def set_can(self, name: str, settings: CanSettings) -> None:
        """Only kind "can" has bit timing (EOPNOTSUPP); changes need the link down (EBUSY)."""
        link = self._get(name)
        if link.kind != "can" or link.can is None:
            raise _fail(errno.EOPNOTSUPP, name)
        if link.up and (settings.bitrate or settings.data_bitrate or settings.fd is not None):
            raise _fail(errno.EBUSY, name)
        for key, value in (
            ("bitrate", settings.bitrate),
            ("sample_point", settings.sample_point),
            ("data_bitrate", settings.data_bitrate),
            ("data_sample_point", settings.data_sample_point),
            ("fd", settings.fd),
            ("restart_ms", settings.restart_ms),
        ):
            if value is not None:
                link.can[key] = value
        link.mtu = CANFD_MTU if link.can["fd"] else CAN_MTU

    def restart_can(self, name: str) -> None:
        """EOPNOTSUPP on non-CAN links, EINVAL while down, EBUSY unless bus-off."""
        link = self._get(name)
        if link.kind != "can" or link.can is None:
            raise _fail(errno.EOPNOTSUPP, name)
        if not link.up:
            raise _fail(errno.EINVAL, name)
        if link.can["state"] != "BUS_OFF":
            raise _fail(errno.EBUSY, name)
        link.can["state"] = "ERROR_ACTIVE"

    def kind(self, name: str) -> str | None:
        """The link's kind; ENODEV if missing."""
        return self._get(name).kind

    def status(self, name: str) -> LinkStatus:
        """Describe a link."""
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
            can=dict(link.can) if link.can is not None else None,
        )

    def close(self) -> None:
        """Nothing to release."""

    def _get(self, name: str) -> _Link:
        link = self._links.get(name)
        if link is None:
            raise _fail(errno.ENODEV, name)
        return link
