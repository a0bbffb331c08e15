"""The daemon's one line format: every record is a single line of printable ASCII.

Audit events and ordinary log records share it (grammar in SECURITY.md)::

    2026-12-02 05:05:25,123 hycan-daemon[42] INFO event=request uid=1000 ... name=vcan0 result=ok

A line is a time stamp, ``hycan-daemon[PID]``, a level, then ``key=value`` fields. A value is
written bare when it is a plain token, else double-quoted with backslash escapes: ``\\"``,
``\\\\``, ``\\n``, ``\\r``, ``\\t``, ``\\uHHHH``/``\\UHHHHHHHH`` for any other character outside
printable ASCII, and ``\\xHH`` for a byte of a name that is not valid UTF-8. So no value a
client controls can end a line, start another one, or put a control byte (a terminal escape
sequence, U+2028, NEL, ...) into the log: this module is the one place that makes client
text safe for the log.
"""

from __future__ import annotations

import logging
import re
from typing import Final

_BARE: Final = re.compile(r"[A-Za-z0-9_.:/@+,-]+")
_UNSAFE: Final = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
_SHORT: Final = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNDECODABLE: Final = range(0xDC80, 0xDD00)  # surrogateescape's stand-ins for raw bytes


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _escape_bytes(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code in _UNDECODABLE:
        return f"\\x{code - 0xDC00:02x}"
    return _escape(match)


def value(data: str | bytes | int) -> str:
    """``data`` as one field value: bare if it is a plain token, else quoted and escaped.

    ``bytes`` (an interface name as received) are read as UTF-8; bytes that are not valid
    UTF-8 are written ``\\xHH``, so the value parses back to exactly the bytes sent.
    """
    if isinstance(data, int):
        return str(data)
    if isinstance(data, bytes):
        text = data.decode("utf-8", "surrogateescape")
        escape = _escape_bytes
    else:
        text = data
        escape = _escape
    if _BARE.fullmatch(text):
        return text
    return f'"{_UNSAFE.sub(escape, text)}"'


def fields(**values: str | bytes | int | None) -> str:
    """``key=value`` pairs joined by spaces; ``None`` values are left out."""
    return " ".join(f"{key}={value(data)}" for key, data in values.items() if data is not None)


class LineFormatter(logging.Formatter):
    """Formats every log record in the line format: ``event=log message="..."`` and, with
    an exception, its whole traceback as one escaped ``traceback="..."`` field."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s hycan-daemon[%(process)d] %(levelname)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        """The prefix, then the record's text as a field."""
        record.message = fields(event="log", message=record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        """One line, whatever the message or the exception contains."""
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if record.exc_info:
            line += " " + fields(traceback=self.formatException(record.exc_info))
        if record.stack_info:
            line += " " + fields(stack=self.formatStack(record.stack_info))
        return line
