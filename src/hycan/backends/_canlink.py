"""rtnetlink attributes for CAN links, built and read with pyroute2's ``can`` message class.

pyroute2 0.9.7 declares ``IFLA_CAN_RESTART`` as a zero-length flag, but the kernel's policy
wants a u32 (``ip link set can0 type can restart`` sends one), so the daemon registers a
subclass that encodes it as u32.
"""

from __future__ import annotations

from typing import Any

from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ifinfmsg.plugins import can as can_plugin

from hycan._canconfig import CanSettings


class _CanData(can_plugin.can):  # type: ignore[misc]
    nla_map = tuple(
        ("IFLA_CAN_RESTART", "uint32") if name == "IFLA_CAN_RESTART" else (name, kind)
        for name, kind in can_plugin.can.nla_map
    )


ifinfmsg.ifinfo.register_link_kind(module={"can": _CanData})


def _linkinfo(data: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [
        (
            "IFLA_LINKINFO",
            {"attrs": [("IFLA_INFO_KIND", "can"), ("IFLA_INFO_DATA", {"attrs": data})]},
        )
    ]


def _tenths_of_percent(fraction: float | None) -> int:
    return 0 if fraction is None else round(fraction * 1000)


def can_settings_attrs(settings: CanSettings) -> list[tuple[str, Any]]:
    """IFLA_LINKINFO for ``ip link set NAME type can ...`` with these settings."""
    data: list[tuple[str, Any]] = []
    if settings.bitrate is not None:
        timing = {
            "bitrate": settings.bitrate,
            "sample_point": _tenths_of_percent(settings.sample_point),
        }
        data.append(("IFLA_CAN_BITTIMING", timing))
    if settings.data_bitrate is not None:
        timing = {
            "bitrate": settings.data_bitrate,
            "sample_point": _tenths_of_percent(settings.data_sample_point),
        }
        data.append(("IFLA_CAN_DATA_BITTIMING", timing))
    if settings.fd is not None:
        data.append(("IFLA_CAN_CTRLMODE", {"fd": "on" if settings.fd else "off"}))
    if settings.restart_ms is not None:
        data.append(("IFLA_CAN_RESTART_MS", settings.restart_ms))
    return _linkinfo(data)


def can_restart_attrs() -> list[tuple[str, Any]]:
    """IFLA_LINKINFO for ``ip link set NAME type can restart``."""
    return _linkinfo([("IFLA_CAN_RESTART", 1)])


def can_status(linkinfo: Any) -> dict[str, Any] | None:
    """The ``can`` part of STATUS from a decoded IFLA_LINKINFO of kind can."""
    data = linkinfo.get_attr("IFLA_INFO_DATA") if linkinfo is not None else None
    if data is None:
        return None
    timing = data.get_attr("IFLA_CAN_BITTIMING") or {}
    data_timing = data.get_attr("IFLA_CAN_DATA_BITTIMING") or {}
    ctrlmode = data.get_attr("IFLA_CAN_CTRLMODE") or {}

    def sample_point(t: Any) -> float | None:
        return t["sample_point"] / 1000 if t and t.get("sample_point") else None

    return {
        "bitrate": timing.get("bitrate", 0) if timing else 0,
        "sample_point": sample_point(timing),
        "data_bitrate": data_timing.get("bitrate", 0) if data_timing else 0,
        "data_sample_point": sample_point(data_timing),
        "fd": ctrlmode.get("fd") == "on" if ctrlmode else False,
        "restart_ms": data.get_attr("IFLA_CAN_RESTART_MS") or 0,
        "state": data.get_attr("IFLA_CAN_STATE"),
    }
