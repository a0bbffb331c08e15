"""python-can interop: a ``can.Bus`` on a link brought up through ``hycan-daemon``.

python-can is optional (``pip install 'hycan[can]'``) and only imported when
:func:`open_bus` is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hycan._sync.client import DaemonClient

if TYPE_CHECKING:
    import can

__all__ = ["open_bus"]

CANFD_MTU = 72
INSTALL_HINT = "pip install 'hycan[can]'"


def open_bus(
    channel: str,
    *,
    create: bool = True,
    fd: bool = False,
    socket_path: str | None = None,
    **kwargs: Any,
) -> can.BusABC:
    """Bring ``channel`` up through hycan and return a python-can SocketCAN bus on it.

    The vcan is created first unless ``create=False`` (use that for real links such as
    ``can0``). With ``fd=True`` a vcan whose MTU is 16 is switched to 72 (CAN FD) before it
    goes up; if it is already up the daemon refuses (``hycan.LinkBusy``), since hycan never
    bounces a link. ``kwargs`` go to ``can.Bus``. The caller owns the bus (``bus.shutdown()``
    or ``with``) and the link: it is left up and not deleted.
    """
    try:  # fail before touching any link if python-can is missing
        import can
    except ImportError as exc:
        raise ImportError(
            f"hycan.can.open_bus needs python-can, which is not installed: {INSTALL_HINT}"
        ) from exc
    with DaemonClient(socket_path) as client:
        if create:
            client.create(channel)
        if fd:
            status = client.status(channel)
            if status.kind == "vcan" and status.mtu != CANFD_MTU:
                client.set_mtu(channel, CANFD_MTU)
        client.up(channel)
    return can.Bus(interface="socketcan", channel=channel, fd=fd, **kwargs)
