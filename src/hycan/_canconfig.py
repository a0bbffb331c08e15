"""CAN controller settings (what `ip link set can0 type can ...` offers), as sent on the wire.

The SET_CAN payload is a UTF-8 JSON object holding only the fields being changed, so the
format can grow without breaking older peers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from hycan.errors import InvalidArgument

MAX_BITRATE = 20_000_000  # well above CAN FD's 8-12 Mbit/s data phase; catches typos


def json_object(payload: bytes, what: str) -> dict[str, Any]:
    """A client's payload that must be a JSON object; else :class:`InvalidArgument` whose
    message starts with ``what``. Deep nesting is a refusal like any other bad payload."""
    try:
        data: Any = json.loads(payload.decode("utf-8"))
    except ValueError as exc:  # not UTF-8, not JSON, or a number beyond int's digit limit
        raise InvalidArgument(f"{what}: not a JSON object ({exc})") from None
    except RecursionError:
        raise InvalidArgument(
            f"{what}: nested too deeply; a flat JSON object is expected"
        ) from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"{what}: not a JSON object")
    return data


# Controller modes (``ip link set DEV type can MODE on|off``): hycan's name -> CAN_CTRLMODE_*
# bit of linux/can/netlink.h. TDC's two bits are set through ``tdc_mode`` instead.
CTRLMODES = {
    "loopback": 0x01,
    "listen_only": 0x02,
    "triple_sampling": 0x04,
    "one_shot": 0x08,
    "berr_reporting": 0x10,
    "fd": 0x20,
    "presume_ack": 0x40,
    "fd_non_iso": 0x80,
    "cc_len8_dlc": 0x100,
}
TDC_MODES = {"off": 0, "auto": 0x200, "manual": 0x400}
# linux/can/netlink.h: enum can_state (as iproute2 prints it), struct can_device_stats.
CAN_STATES = ("ERROR-ACTIVE", "ERROR-WARNING", "ERROR-PASSIVE", "BUS-OFF", "STOPPED", "SLEEPING")
CAN_STATS = (
    "bus_error",
    "error_warning",
    "error_passive",
    "bus_off",
    "arbitration_lost",
    "restarts",
)
_TIMING = ("tq", "prop_seg", "phase_seg1", "phase_seg2")  # all four, or a bitrate
# name -> (lowest, highest) for the whole-number settings
_RANGES = {
    "bitrate": (1, MAX_BITRATE),
    "tq": (1, 1_000_000),  # ns
    "prop_seg": (1, 1024),
    "phase_seg1": (1, 1024),
    "phase_seg2": (1, 1024),
    "sjw": (1, 1024),
    "tdcv": (0, 0xFFFF),
    "tdco": (0, 0xFFFF),
    "tdcf": (0, 0xFFFF),
    "termination": (0, 0xFFFF),  # ohms; 0 switches it off
    "restart_ms": (0, 0xFFFFFFFF),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class CanSettings:
    """What ``ip link set DEV type can ...`` (and systemd-networkd's ``[CAN]``) sets on a
    CAN controller; None leaves a setting unchanged. Each phase is timed either by
    ``bitrate`` (with an optional ``sample_point``) or by ``tq`` + ``prop_seg`` +
    ``phase_seg1`` + ``phase_seg2``; ``sjw`` goes with either. ``data_*`` is the CAN FD data
    phase, which (like TDC) the kernel takes only together with ``fd=True`` and both
    timings. Modes are each True (on) or False (off); see :data:`CTRLMODES`."""

    bitrate: int | None = None
    sample_point: float | None = None  # 0 < sp < 1, e.g. 0.875
    tq: int | None = None  # time quantum, ns
    prop_seg: int | None = None  # in time quanta
    phase_seg1: int | None = None
    phase_seg2: int | None = None
    sjw: int | None = None
    data_bitrate: int | None = None
    data_sample_point: float | None = None
    data_tq: int | None = None
    data_prop_seg: int | None = None
    data_phase_seg1: int | None = None
    data_phase_seg2: int | None = None
    data_sjw: int | None = None
    fd: bool | None = None
    fd_non_iso: bool | None = None
    listen_only: bool | None = None
    loopback: bool | None = None
    one_shot: bool | None = None
    berr_reporting: bool | None = None
    triple_sampling: bool | None = None
    presume_ack: bool | None = None
    cc_len8_dlc: bool | None = None
    tdc_mode: str | None = None  # "auto", "manual" or "off" (transmitter delay compensation)
    tdcv: int | None = None  # TDC value, manual mode only
    tdco: int | None = None  # TDC offset
    tdcf: int | None = None  # TDC filter window
    termination: int | None = None  # ohms, one of the controller's values
    restart_ms: int | None = None  # automatic bus-off restart delay; 0 = off

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise InvalidArgument(f"invalid CAN settings: {problem}")

    def modes(self) -> dict[str, bool]:
        """The controller modes this sets (name -> on), in :data:`CTRLMODES` order."""
        return {m: v for m in CTRLMODES if (v := getattr(self, m)) is not None}

    def timing(self, data: bool = False) -> dict[str, Any] | None:
        """The nominal (or ``data``) phase's timing as struct can_bittiming fields that are
        set (sample point in tenths of a percent), or None if it is left unchanged."""
        prefix = "data_" if data else ""
        values = {key: getattr(self, prefix + key) for key in ("bitrate", *_TIMING, "sjw")}
        values = {key: value for key, value in values.items() if value is not None}
        point = getattr(self, prefix + "sample_point")
        if point is not None:
            values["sample_point"] = round(point * 1000)
        return values or None

    def _problem(self) -> str | None:
        if all(getattr(self, f.name) is None for f in fields(self)):
            return "nothing to set (give a bitrate, a mode, restart_ms, ...)"
        for f in fields(self):
            problem = _type_problem(f.name, getattr(self, f.name))
            if problem:
                return problem
        for prefix in ("", "data_"):
            problem = self._phase_problem(prefix)
            if problem:
                return problem
        return self._fd_problem() or self._tdc_problem()

    def _phase_problem(self, prefix: str) -> str | None:
        given = {key for key in ("bitrate", "sample_point", *_TIMING, "sjw")
                 if getattr(self, prefix + key) is not None}  # fmt: skip
        segments = given & set(_TIMING)
        if "bitrate" in given and segments:
            return (f"give either {prefix}bitrate or {prefix}tq + segments, not both "
                    "(the kernel computes the segments from a bitrate)")  # fmt: skip
        if segments and segments != set(_TIMING):
            missing = ", ".join(prefix + key for key in _TIMING if key not in segments)
            return f"segment timing needs {missing} as well"
        if "sample_point" in given and "bitrate" not in given:
            return f"{prefix}sample_point needs {prefix}bitrate"
        if "sjw" in given and not ("bitrate" in given or segments):
            return f"{prefix}sjw needs {prefix}bitrate or {prefix}tq + segments"
        return None

    def _fd_problem(self) -> str | None:
        data = self.timing(data=True) is not None
        if data and self.fd is not True:
            return "CAN FD data timing needs fd=True in the same request"
        if self.fd_non_iso and self.fd is not True:
            return "fd_non_iso needs fd=True in the same request"
        if self.fd and not (data and self.timing() is not None):
            return (
                "fd=True needs the nominal timing (bitrate) and the data timing "
                "(data_bitrate) in the same request: the kernel takes them together"
            )
        return None

    def _tdc_problem(self) -> str | None:
        mode = self.tdc_mode
        values = [key for key in ("tdcv", "tdco", "tdcf") if getattr(self, key) is not None]
        if mode is None:
            return f"{values[0]} needs tdc_mode (auto or manual)" if values else None
        if mode == "off":
            return f"{values[0]} needs tdc_mode auto or manual, not off" if values else None
        if self.fd is not True:
            return "tdc_mode needs fd=True (and both timings) in the same request"
        if self.tdco is None:
            return f"tdc_mode {mode} needs tdco (the offset)"
        if (self.tdcv is not None) != (mode == "manual"):
            return "tdcv goes with tdc_mode manual, and manual needs it"
        return None

    def refused_by(self, name: str, can: dict[str, Any] | None) -> str:
        """Why controller ``name`` (the ``can`` part of its STATUS; None: not a CAN
        controller) answered EOPNOTSUPP to these settings, naming what it lacks."""
        if can is None:
            return (
                f"not supported: {name} is not a CAN controller: a vcan or vxcan does not "
                "support bit timing, modes or termination"
            )
        supported = can.get("modes_supported")
        wanted = [mode for mode, on in self.modes().items() if on]
        if self.tdc_mode not in (None, "off"):
            wanted.append(f"tdc_{self.tdc_mode}")
        lacking = [mode for mode in wanted if supported is not None and mode not in supported]
        if lacking:
            offers = ", ".join(supported or []) or "none"
            return f"not supported: {name} cannot do {', '.join(lacking)} (its modes: {offers})"
        if self.termination is not None and not can.get("terminations_supported"):
            return f"not supported: {name} has no switchable termination"
        if self.timing(data=True) is not None and can.get("data_timing_const") is None:
            return f"not supported: {name} has no CAN FD data phase"
        return (
            f"not supported: {name} refused these CAN settings (a controller may lack a mode, "
            "termination or bus-off restart)"
        )

    def to_payload(self) -> bytes:
        """The SET_CAN payload: JSON of the fields that are set."""
        data = {key: value for key, value in asdict(self).items() if value is not None}
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CanSettings:
        """Settings from keyword names (a payload's or a caller's); an unknown name is an
        :class:`InvalidArgument` that lists the known ones. What the message quotes of
        the keys is JSON-escaped ASCII."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            shown = ", ".join(json.dumps(key) for key in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise InvalidArgument(
                f"invalid CAN settings: unknown keys {shown}{more} "
                f"(known: {', '.join(sorted(known))})"
            )
        return cls(**data)

    @classmethod
    def from_payload(cls, payload: bytes) -> CanSettings:
        """Parse a SET_CAN payload; raise :class:`InvalidArgument` with the reason.
        Deep nesting is a refusal like any other bad payload."""
        return cls.from_dict(json_object(payload, "invalid CAN settings"))


def _type_problem(name: str, value: object) -> str | None:
    """What is wrong with one setting's value alone (type and range), if anything."""
    if value is None:
        return None
    base = name.removeprefix("data_")
    if base == "sample_point":
        if type(value) not in (int, float) or not 0 < value < 1:  # type: ignore[operator]
            return f"{name} must be a fraction between 0 and 1, e.g. 0.875"
    elif name == "tdc_mode":
        if value not in TDC_MODES:
            return "tdc_mode must be auto, manual or off"
    elif base in _RANGES:
        low, high = _RANGES[base]
        if type(value) is not int or not low <= value <= high:
            return f"{name} must be a whole number in {low}..{high}"
    elif type(value) is not bool:
        return f"{name} must be true or false"
    return None
