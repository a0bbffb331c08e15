"""Interface-name validation: the kernel's ``dev_valid_name()``, byte for byte, plus two
rules of hycan's own.

The kernel (net/core/dev.c) refuses an empty name, one of 16 bytes or more, ``.`` and
``..``, and any name holding ``/``, ``:`` or a byte its ``isspace()`` counts as space --
by lib/ctype.c that is ``\\t \\n \\v \\f \\r``, space, **and 0xA0** (Latin-1's no-break
space; in UTF-8 it is a byte of U+00A0, 'à', 'Ġ', ...). hycan is stricter in three ways:
it refuses ASCII control bytes (0x00-0x1f, 0x7f; a NUL would make the kernel act on a
prefix), ``%`` (to the kernel a name with ``%d`` is a pattern it fills in, so ``x%d`` would
create ``x0`` while hycan reported ``x%d``), and requires valid UTF-8.
"""

from __future__ import annotations

from hycan.errors import InvalidName

IFNAMSIZ = 16
MAX_NAME_BYTES = IFNAMSIZ - 1  # the kernel keeps a NUL terminator
KERNEL_SPACE = frozenset(b"\t\n\v\f\r \xa0")  # lib/ctype.c: the bytes with _S set
_FORBIDDEN = frozenset(b"/:") | KERNEL_SPACE
_CONTROL = frozenset(range(0x20)) | {0x7F}
_NBSP = 0xA0


def shown(raw: bytes) -> str:
    """``raw`` quoted for a message: invalid UTF-8 and non-printable characters escaped."""
    text = raw.decode("utf-8", "backslashreplace")
    return "'" + "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text) + "'"


def name_problem(raw: bytes) -> str | None:
    """Say what is wrong with the interface name ``raw``, or None if it is valid."""
    if 0 < len(raw) <= MAX_NAME_BYTES and not raw.translate(None, _PLAIN) and raw.strip(b"."):
        return None  # the common name: one C-level pass instead of the checks below
    return _problem(raw)


# Names of ASCII letters, digits, '_', '.' and '-' (not only dots) within the length limit
# break no rule: a fast path the daemon and the clients take on every request (docs/perf.md).
_PLAIN = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"


def _problem(raw: bytes) -> str | None:
    if not raw:
        return "invalid name: an interface name must not be empty"
    if len(raw) > MAX_NAME_BYTES:
        return (
            f"invalid name {shown(raw)}: {len(raw)} bytes, the kernel allows at most "
            f"{MAX_NAME_BYTES} (names are never truncated)"
        )
    if raw in (b".", b".."):
        return f"invalid name {shown(raw)}: '.' and '..' are not interface names"
    controls = sorted({b for b in raw if b in _CONTROL})
    if controls:
        return (
            f"invalid name {shown(raw)}: contains control bytes "
            f"{', '.join(f'0x{b:02x}' for b in controls)}; hycan refuses them (0x00-0x1f, 0x7f)"
        )
    if b"%" in raw:
        return (
            f"invalid name {shown(raw)}: contains '%', which the kernel reads as a pattern "
            "(x%d would become x0, x1, ...); hycan refuses it"
        )
    bad = sorted({chr(b) for b in raw if b in _FORBIDDEN and b != _NBSP})
    if bad:
        return (
            f"invalid name {shown(raw)}: contains {', '.join(map(repr, bad))}; "
            "'/', ':' and whitespace are not allowed"
        )
    if _NBSP in raw:
        return (
            f"invalid name {shown(raw)}: contains the byte 0xa0 (in UTF-8 a byte of U+00A0, "
            "'à', 'Ġ', ...), which the kernel counts as whitespace; pick another character"
        )
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return f"invalid name {shown(raw)}: not valid UTF-8"
    return None


def encode_name(name: str | bytes) -> bytes:
    """Return ``name`` as wire bytes, raising :class:`InvalidName` if it is not valid."""
    raw = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else bytes(name)
    problem = name_problem(raw)
    if problem is not None:
        raise InvalidName(problem)
    return raw


NAME_PREFIX = "hyc"


def new_vcan_name() -> str:
    """A random vcan name, ``hyc`` + 8 hex digits (11 bytes; the kernel allows 15)."""
    import secrets

    return NAME_PREFIX + secrets.token_hex(4)
