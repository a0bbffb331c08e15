"""rtnetlink attributes for CAN links, built and read with pyroute2's ``can`` message class.

The daemon registers a subclass of pyroute2's class that reads and writes three attributes
as the kernel does: ``IFLA_CAN_RESTART`` is a u32 (pyroute2 0.9.7 declares a zero-length
flag, but the kernel's policy wants a u32, as ``ip link set can0 type can restart``
sends), and the control modes (``IFLA_CAN_CTRLMODE``, ``IFLA_CAN_CTRLMODE_SUPPORTED``) stay
the kernel's bit masks, which :data:`hycan._canconfig.CTRLMODES` names.
"""

from __future__ import annotations

import struct
from typing import Any

from pyroute2.netlink import nla
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ifinfmsg.plugins import can as can_plugin

from hycan._canconfig import CAN_STATES, CAN_STATS, CTRLMODES, TDC_MODES, CanSettings

_OVERRIDES = {
    "IFLA_CAN_RESTART": "uint32",
    "IFLA_CAN_STATE": "uint32",
    "IFLA_CAN_CTRLMODE": "hycan_ctrlmode",
    "IFLA_CAN_CTRLMODE_EXT": "hycan_ctrlmode_ext",
}


class _CanData(can_plugin.can):  # type: ignore[misc]
    nla_map = tuple((name, _OVERRIDES.get(name, kind)) for name, kind in can_plugin.can.nla_map)

    class hycan_ctrlmode(nla):  # type: ignore[misc]  # noqa: N801 (pyroute2's naming)
        fields = (("mask", "I"), ("flags", "I"))

    class hycan_ctrlmode_ext(nla):  # type: ignore[misc]  # noqa: N801
        prefix = "IFLA_"
        nla_map = (
            ("IFLA_CAN_CTRLMODE_UNSPEC", "none"),
            ("IFLA_CAN_CTRLMODE_SUPPORTED", "uint32"),
        )


# Every register_link_kind() call first resets each kind to pyroute2's own class, so the
# daemon registers its kinds here, in one call: "can", and "vxcan", whose IFLA_INFO_DATA is
# a veth's (VXCAN_INFO_PEER (1) holds the peer's ifinfomsg).
ifinfmsg.ifinfo.register_link_kind(module={"can": _CanData, "vxcan": ifinfmsg.ifinfo.veth_data})

_STATS_STRUCT = struct.Struct(f"={len(CAN_STATS)}I")  # struct can_device_stats
_TIMING_KEYS = ("tq", "prop_seg", "phase_seg1", "phase_seg2", "sjw", "brp")
_TDC_KEYS = ("tdcv", "tdco", "tdcf")


def _linkinfo(data: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [
        (
            "IFLA_LINKINFO",
            {"attrs": [("IFLA_INFO_KIND", "can"), ("IFLA_INFO_DATA", {"attrs": data})]},
        )
    ]


def can_settings_attrs(settings: CanSettings) -> list[tuple[str, Any]]:
    """IFLA_LINKINFO for ``ip link set NAME type can ...`` with these settings."""
    data: list[tuple[str, Any]] = []
    for attr, timing in (
        ("IFLA_CAN_BITTIMING", settings.timing()),
        ("IFLA_CAN_DATA_BITTIMING", settings.timing(data=True)),
    ):
        if timing is not None:
            data.append((attr, timing))
    mask = flags = 0
    for mode, on in settings.modes().items():
        mask |= CTRLMODES[mode]
        flags |= CTRLMODES[mode] if on else 0
    if settings.tdc_mode is not None:
        mask |= TDC_MODES["auto"] | TDC_MODES["manual"]
        flags |= TDC_MODES[settings.tdc_mode]
    if mask:
        data.append(("IFLA_CAN_CTRLMODE", {"mask": mask, "flags": flags}))
    tdc = [(f"IFLA_CAN_TDC_{key.upper()}", v) for key in _TDC_KEYS
           if (v := getattr(settings, key)) is not None]  # fmt: skip
    if tdc:
        data.append(("IFLA_CAN_TDC", {"attrs": tdc}))
    if settings.termination is not None:
        data.append(("IFLA_CAN_TERMINATION", settings.termination))
    if settings.restart_ms is not None:
        data.append(("IFLA_CAN_RESTART_MS", settings.restart_ms))
    return _linkinfo(data)


def can_restart_attrs() -> list[tuple[str, Any]]:
    """IFLA_LINKINFO for ``ip link set NAME type can restart``."""
    return _linkinfo([("IFLA_CAN_RESTART", 1)])


def mode_names(bits: int) -> list[str]:
    """hycan's names of the control modes in a CAN_CTRLMODE_* bit mask (TDC: tdc_auto,
    tdc_manual)."""
    names = [mode for mode, bit in CTRLMODES.items() if bits & bit]
    return names + [f"tdc_{mode}" for mode, bit in TDC_MODES.items() if bit and bits & bit]


def _sample_point(timing: dict[str, Any] | None) -> float | None:
    return timing["sample_point"] / 1000 if timing and timing.get("sample_point") else None


def _timing(timing: Any) -> dict[str, int] | None:
    return {key: timing[key] for key in _TIMING_KEYS} if timing else None


def _timing_const(const: Any) -> dict[str, Any] | None:
    if not const:
        return None
    shown = {key: const[key] for key in const if key not in ("header", "name")}
    return {"name": bytes(const["name"]).rstrip(b"\0").decode("ascii", "replace"), **shown}


def _tdc(data: Any) -> dict[str, int] | None:
    tdc = data.get_attr("IFLA_CAN_TDC")
    if tdc is None:
        return None
    found = {name.removeprefix("IFLA_CAN_TDC_").lower(): value for name, value in tdc["attrs"]}
    return {key: value for key, value in found.items() if value is not None}


def _stats(xstats: str | None) -> dict[str, int] | None:
    """struct can_device_stats from IFLA_INFO_XSTATS, which pyroute2 leaves as hex text."""
    raw = bytes.fromhex(xstats.replace(":", "")) if xstats else b""
    if len(raw) < _STATS_STRUCT.size:
        return None
    return dict(zip(CAN_STATS, _STATS_STRUCT.unpack_from(raw), strict=True))


# STATUS "frames" key -> struct rtnl_link_stats64 field
_FRAME_FIELDS = {
    "tx_frames": "tx_packets",
    "rx_frames": "rx_packets",
    "tx_bytes": "tx_bytes",
    "rx_bytes": "rx_bytes",
    "tx_errors": "tx_errors",
    "rx_errors": "rx_errors",
    "tx_dropped": "tx_dropped",
    "rx_dropped": "rx_dropped",
}


def _frames(stats64: Any) -> dict[str, int] | None:
    """The link's frame counters from IFLA_STATS64 (None when the kernel left them out)."""
    return {key: stats64[field] for key, field in _FRAME_FIELDS.items()} if stats64 else None


def can_status(linkinfo: Any, stats64: Any = None) -> dict[str, Any] | None:
    """The ``can`` part of STATUS from a decoded IFLA_LINKINFO of kind can and the link's
    IFLA_STATS64 (the shape is documented in docs/can.md)."""
    data = linkinfo.get_attr("IFLA_INFO_DATA") if linkinfo is not None else None
    if data is None:
        return None
    timing = data.get_attr("IFLA_CAN_BITTIMING") or None
    data_timing = data.get_attr("IFLA_CAN_DATA_BITTIMING") or None
    ctrlmode = data.get_attr("IFLA_CAN_CTRLMODE")
    flags = ctrlmode["flags"] if ctrlmode else 0
    ext = data.get_attr("IFLA_CAN_CTRLMODE_EXT")
    supported = ext.get_attr("IFLA_CAN_CTRLMODE_SUPPORTED") if ext is not None else None
    state = data.get_attr("IFLA_CAN_STATE")
    berr = data.get_attr("IFLA_CAN_BERR_COUNTER")
    clock = data.get_attr("IFLA_CAN_CLOCK")
    return {
        "state": CAN_STATES[state] if state is not None and state < len(CAN_STATES) else None,
        "berr_counter": {"tx": berr["txerr"], "rx": berr["rxerr"]} if berr else None,
        "bitrate": timing["bitrate"] if timing else 0,
        "sample_point": _sample_point(timing),
        "timing": _timing(timing),
        "data_bitrate": data_timing["bitrate"] if data_timing else 0,
        "data_sample_point": _sample_point(data_timing),
        "data_timing": _timing(data_timing),
        "fd": bool(flags & CTRLMODES["fd"]),
        "modes": mode_names(flags),
        "modes_supported": None if supported is None else mode_names(supported),
        "clock": clock or None,
        "timing_const": _timing_const(data.get_attr("IFLA_CAN_BITTIMING_CONST")),
        "data_timing_const": _timing_const(data.get_attr("IFLA_CAN_DATA_BITTIMING_CONST")),
        "bitrates_supported": list(data.get_attr("IFLA_CAN_BITRATE_CONST") or []),
        "bitrate_max": data.get_attr("IFLA_CAN_BITRATE_MAX") or None,
        "tdc": _tdc(data),
        "restart_ms": data.get_attr("IFLA_CAN_RESTART_MS") or 0,
        "termination": data.get_attr("IFLA_CAN_TERMINATION"),
        "terminations_supported": list(data.get_attr("IFLA_CAN_TERMINATION_CONST") or []),
        "stats": _stats(linkinfo.get_attr("IFLA_INFO_XSTATS")),
        "frames": _frames(stats64),
    }
