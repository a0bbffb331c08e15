"""The audit trail: one line per request (and per refused connection), on stderr.

Successful read-only queries (PING, STATUS) are logged at DEBUG, the rest at INFO.

Lines look like the daemon's other log lines (``TIME hycan-daemon[PID] LEVEL ...``) but are
written without a ``logging.LogRecord`` each: a connection's lines are formatted together
and written in one call, after its replies went out, off the client's critical path.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TextIO

from hycan._peercred import PeerCredentials

audit_logger = logging.getLogger("hycan.audit")
"""Its level decides whether audit lines are written (INFO: yes; WARNING: refusals only)."""


class AuditLog:
    """Collects audit lines and writes them in batches."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._pid = os.getpid()
        self._lines: list[str] = []
        self._second = -1
        self._stamp = ""

    @property
    def stream(self) -> TextIO:
        """Where lines go (stderr unless given; looked up late so tests can capture it)."""
        return self._stream or sys.stderr

    def request(
        self, peer: PeerCredentials, op: str, name: bytes, result: str, *, routine: bool = False
    ) -> None:
        """Record one answered request (written at the next :meth:`flush`).

        ``routine`` lines (successful read-only queries: PING, STATUS) are DEBUG, so a
        health check polling the daemon does not flood the log; everything that changes
        or fails is INFO.
        """
        level, number = ("DEBUG", logging.DEBUG) if routine else ("INFO", logging.INFO)
        if audit_logger.isEnabledFor(number):
            self._lines.append(
                f"{level} uid={peer.uid} gid={peer.gid} pid={peer.pid} op={op} "
                f"name={_quoted(name)} result={result}"
            )

    def refusal(self, peer: PeerCredentials, reason: str) -> None:
        """Record a refused connection and write it at once."""
        if audit_logger.isEnabledFor(logging.WARNING):
            self._lines.append(
                f"WARNING uid={peer.uid} gid={peer.gid} pid={peer.pid} op=CONNECT "
                f"result=refused: {reason}"
            )
            self.flush()

    def flush(self) -> None:
        """Write the collected lines in one call."""
        if not self._lines:
            return
        now = time.time()
        if int(now) != self._second:  # strftime once a second, not once a request
            self._second = int(now)
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self._second))
        prefix = f"{self._stamp},{int(now % 1 * 1000):03d} hycan-daemon[{self._pid}] "
        text = "".join(f"{prefix}{line}\n" for line in self._lines)
        self._lines.clear()
        stream = self.stream
        stream.flush()  # keep order with anything logging wrote before
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # not a real file (e.g. StringIO)
            stream.write(text)
            return
        data = text.encode("utf-8", "backslashreplace")
        while data:  # one write() in practice; loop for the rare partial write
            data = data[os.write(fd, data) :]


def _quoted(name: bytes) -> str:
    """``name`` as one token: as is if it is plain, else repr() (no forged audit lines)."""
    text = name.decode("utf-8", "backslashreplace")
    return text if text.isprintable() and " " not in text else repr(text)
