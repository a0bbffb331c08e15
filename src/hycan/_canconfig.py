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


@dataclass(frozen=True, slots=True)
class CanSettings:
    """Bit timing and modes of a CAN controller; None leaves a setting unchanged."""

    bitrate: int | None = None
    sample_point: float | None = None  # 0 < sp < 1, e.g. 0.875
    data_bitrate: int | None = None  # CAN FD data phase
    data_sample_point: float | None = None
    fd: bool | None = None
    restart_ms: int | None = None  # automatic bus-off restart delay; 0 = off

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise InvalidArgument(f"invalid CAN settings: {problem}")

    def _problem(self) -> str | None:
        if all(getattr(self, f.name) is None for f in fields(self)):
            return "nothing to set (give a bitrate, fd, restart_ms, ...)"
        for name in ("bitrate", "data_bitrate"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or not 0 < value <= MAX_BITRATE):
                return f"{name} must be a whole number of bit/s in 1..{MAX_BITRATE}"
        for name, rate in (("sample_point", "bitrate"), ("data_sample_point", "data_bitrate")):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, int | float) or not 0 < value < 1:
                return f"{name} must be a fraction between 0 and 1, e.g. 0.875"
            if getattr(self, rate) is None:
                return f"{name} needs {rate}"
        if self.fd is not None and type(self.fd) is not bool:
            return "fd must be true or false"
        if self.restart_ms is not None and (
            type(self.restart_ms) is not int or not 0 <= self.restart_ms <= 0xFFFFFFFF
        ):
            return "restart_ms must be a whole number of milliseconds >= 0"
        return None

    def to_payload(self) -> bytes:
        """The SET_CAN payload: JSON of the fields that are set."""
        data = {key: value for key, value in asdict(self).items() if value is not None}
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_payload(cls, payload: bytes) -> CanSettings:
        """Parse a SET_CAN payload; raise :class:`InvalidArgument` with the reason.

        The payload is client-controlled: what the messages quote of it (unknown keys) is
        JSON-escaped ASCII, and deep nesting is a refusal like any other bad payload.
        """
        data = json_object(payload, "invalid CAN settings")
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
