"""A parser for the daemon's log lines, written from the grammar in SECURITY.md (not from
the encoder in ``hycan.daemon.logfmt``), so the tests check the two against each other."""

from __future__ import annotations

import re
from typing import NamedTuple

_SAFE = r"[\x20\x21\x23-\x5b\x5d-\x7e]"
_ESCAPE = r'\\(?:["\\nrt]|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})'
_BARE = r"[A-Za-z0-9_.:/@+,-]+"
_QUOTED = rf'"(?:{_SAFE}|{_ESCAPE})*"'
_FIELD = re.compile(rf"([a-z_]+)=({_BARE}|{_QUOTED})")
LINE = re.compile(
    r"(?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) hycan-daemon\[(?P<pid>\d+)\] "
    r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)"
    rf"(?P<fields>(?: [a-z_]+=(?:{_BARE}|{_QUOTED}))+)"
)
_SHORT = {'"': b'"', "\\": b"\\", "n": b"\n", "r": b"\r", "t": b"\t"}


class Line(NamedTuple):
    level: str
    fields: dict[str, bytes]  # values as the bytes they stand for

    def text(self, key: str) -> str:
        """A field as text (code points; lone surrogates kept as such)."""
        return self.fields[key].decode("utf-8", "surrogatepass")


def unquote(value: str) -> bytes:
    """The bytes a field value stands for (``\\xHH`` is a raw byte, ``\\u`` a code point)."""
    if not value.startswith('"'):
        return value.encode("ascii")
    out = bytearray()
    body = value[1:-1]
    i = 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out += char.encode("ascii")
            i += 1
            continue
        kind = body[i + 1]
        if kind in _SHORT:
            out += _SHORT[kind]
            i += 2
        elif kind == "x":
            out.append(int(body[i + 2 : i + 4], 16))
            i += 4
        else:
            width = 4 if kind == "u" else 8
            code = int(body[i + 2 : i + 2 + width], 16)
            out += chr(code).encode("utf-8", "surrogatepass")
            i += 2 + width
    return bytes(out)


def parse(line: str) -> Line:
    """One log line; raises ValueError if it breaks the grammar."""
    match = LINE.fullmatch(line)
    if match is None:
        raise ValueError(f"not a hycan log line: {line!r}")
    found = {key: unquote(raw) for key, raw in _FIELD.findall(match["fields"])}
    return Line(match["level"], found)


def parse_log(text: str) -> list[Line]:
    """Every line of ``text`` (which must end with a newline; lines end at "\n" only)."""
    assert text == "" or text.endswith("\n"), "a record was not terminated"
    return [parse(line) for line in text.split("\n")[:-1]]
