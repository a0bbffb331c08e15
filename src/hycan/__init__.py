"""hycan: create vcan links and bring CAN/network links up and down without root.

Sync API (stdlib only)::

    from hycan import Netlink
    with Netlink("vcan0") as net:   # creates vcan0 through hycan-daemon
        net.up()

trio API (imports trio on first use)::

    from hycan import AsyncNetlink
    async with await AsyncNetlink.open("vcan0") as net:
        await net.up()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from hycan._status import LinkEntry, LinkStatus, RouteEntry
from hycan._sync.client import DaemonClient, Netlink
from hycan.errors import (
    AlreadyExists,
    DaemonBusy,
    DaemonUnavailable,
    ErrorCode,
    HycanError,
    InterfaceNotFound,
    InvalidArgument,
    InvalidName,
    LeaseLost,
    LinkBusy,
    NotSupported,
    OperationFailed,
    PermissionDenied,
    ProtocolError,
    Timeout,
)

if TYPE_CHECKING:
    from hycan._async.client import AsyncDaemonClient, AsyncNetlink
    from hycan._canconfig import CanSettings
    from hycan._events import LinkEvent

__all__ = [
    "AlreadyExists",
    "AsyncDaemonClient",
    "AsyncNetlink",
    "CanSettings",
    "DaemonBusy",
    "DaemonClient",
    "DaemonUnavailable",
    "ErrorCode",
    "HycanError",
    "InterfaceNotFound",
    "InvalidArgument",
    "InvalidName",
    "LeaseLost",
    "LinkBusy",
    "LinkEntry",
    "LinkEvent",
    "LinkStatus",
    "Netlink",
    "NotSupported",
    "OperationFailed",
    "PermissionDenied",
    "ProtocolError",
    "RouteEntry",
    "Timeout",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # The trio API is imported lazily so that `import hycan` never imports trio.
    if name in ("AsyncDaemonClient", "AsyncNetlink"):
        from hycan._async import client

        return getattr(client, name)
    if name == "CanSettings":  # dataclasses: imported on first use, like the trio API
        from hycan._canconfig import CanSettings

        return CanSettings
    if name == "LinkEvent":
        from hycan._events import LinkEvent

        return LinkEvent
    raise AttributeError(f"module 'hycan' has no attribute {name!r}")
