"""Interface-name validation, following the kernel's ``dev_valid_name()`` rules."""

from __future__ import annotations

from hycan.errors import InvalidName

IFNAMSIZ = 16
MAX_NAME_BYTES = IFNAMSIZ - 1  # the kernel keeps a NUL terminator
_FORBIDDEN = frozenset(b"/:\x00 \t\n\v\f\r")


def name_problem(raw: bytes) -> str | None:
    """Say what is wrong with the interface name ``raw``, or None if the kernel accepts it."""
    shown = raw.decode("utf-8", "backslashreplace")
    if not raw:
        return "invalid name: an interface name must not be empty"
    if len(raw) > MAX_NAME_BYTES:
        return (
            f"invalid name {shown!r}: {len(raw)} bytes, the kernel allows at most "
            f"{MAX_NAME_BYTES} (names are never truncated)"
        )
    if raw in (b".", b".."):
        return f"invalid name {shown!r}: '.' and '..' are not interface names"
    bad = sorted({chr(b) for b in raw if b in _FORBIDDEN})
    if bad:
        return (
            f"invalid name {shown!r}: contains {', '.join(map(repr, bad))}; "
            "'/', ':', NUL and whitespace are not allowed"
        )
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return f"invalid name {shown!r}: not valid UTF-8"
    return None


def encode_name(name: str | bytes) -> bytes:
    """Return ``name`` as wire bytes, raising :class:`InvalidName` if the kernel would refuse it."""
    raw = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else bytes(name)
    problem = name_problem(raw)
    if problem is not None:
        raise InvalidName(problem)
    return raw
