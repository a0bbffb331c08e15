"""The audit trail: one line per request and per refused connection, on stderr.

Lines use the daemon's one format (:mod:`hycan.daemon.logfmt`, grammar in SECURITY.md), so
no name, payload or message a client controls can forge, split or colour a line. Successful
read-only queries (PING, STATUS) are DEBUG, changes INFO, failures INFO and refusals WARNING.

Failures and refusals are budgeted per uid (:class:`Throttle`): a burst, then a steady rate;
beyond it they are counted, and one ``event=suppressed`` line a second says how many, from
whom, over how long. So a client flooding bad frames or connections grows the log by a
bounded number of lines a second, however many bytes it sends. Changes that succeed are
never suppressed.

Lines are written without a ``logging.LogRecord`` each: a connection's lines are formatted
together and written in one call, after its replies went out, off the client's critical path.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TextIO

from hycan._peercred import PeerCredentials
from hycan.daemon.logfmt import fields

audit_logger = logging.getLogger("hycan.audit")
"""Its level decides whether audit lines are written (INFO: yes; WARNING: refusals only)."""

FAILURE_BURST: Final = 20  # failure lines a uid may cause at once...
FAILURE_RATE: Final = 1.0  # ...and per second after that
SUMMARY_EVERY: Final = 1.0  # seconds between two summaries of one uid's suppressed lines


@dataclass(slots=True)
class _Quota:
    tokens: float
    stamp: float
    requests: int = 0  # failed requests suppressed since ``since``
    connections: int = 0  # refused connections suppressed since ``since``
    since: float = 0.0
    pid: int = 0  # the last suppressed peer's pid


class Throttle:
    """A token bucket of failure lines per uid; what it refuses is counted for a summary."""

    def __init__(
        self,
        burst: int = FAILURE_BURST,
        rate: float = FAILURE_RATE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.rate = rate
        self._clock = clock
        self._quotas: dict[int, _Quota] = {}

    def allow(self, peer: PeerCredentials, *, connection: bool = False) -> bool:
        """Spend a token of ``peer.uid``; False (and counted) when it has none left."""
        now = self._clock()
        quota = self._quotas.get(peer.uid)
        if quota is None:
            quota = self._quotas[peer.uid] = _Quota(float(self.burst), now)
        quota.tokens = min(self.burst, quota.tokens + (now - quota.stamp) * self.rate)
        quota.stamp = now
        if quota.tokens >= 1:
            quota.tokens -= 1
            return True
        if not quota.requests + quota.connections:
            quota.since = now
        if connection:
            quota.connections += 1
        else:
            quota.requests += 1
        quota.pid = peer.pid
        return False

    def summaries(self, *, final: bool = False) -> list[str]:
        """Summary lines for the uids whose suppressed lines are due (all with ``final``);
        forgets uids whose bucket is full again."""
        now = self._clock()
        lines = []
        for uid, quota in list(self._quotas.items()):
            count = quota.requests + quota.connections
            if count and (final or now - quota.since >= SUMMARY_EVERY):
                lines.append(_summary(uid, quota, now - quota.since))
                quota.requests = quota.connections = 0
            elif not count and now - quota.stamp >= self.burst / self.rate:
                del self._quotas[uid]
        return lines


def _summary(uid: int, quota: _Quota, seconds: float) -> str:
    parts = []
    if quota.requests:
        parts.append(f"{quota.requests} more failed requests")
    if quota.connections:
        parts.append(f"{quota.connections} more refused connections")
    what = " and ".join(parts)
    return "WARNING " + fields(
        event="suppressed",
        uid=uid,
        pid=quota.pid,
        count=quota.requests + quota.connections,
        requests=quota.requests,
        connections=quota.connections,
        seconds=f"{seconds:.1f}",
        message=f"... and {what} from uid {uid} pid {quota.pid} in {seconds:.1f} s",
    )


class AuditLog:
    """Collects audit lines and writes them in batches. ``throttle=None`` writes every line."""

    def __init__(self, stream: TextIO | None = None, throttle: Throttle | None = None) -> None:
        self._stream = stream
        self.throttle = throttle
        self._pid = os.getpid()
        self._lines: list[str] = []
        self._second = -1
        self._stamp = ""

    @property
    def stream(self) -> TextIO:
        """Where lines go (stderr unless given; looked up late so tests can capture it)."""
        return self._stream or sys.stderr

    def request(
        self,
        peer: PeerCredentials,
        op: str,
        name: bytes,
        *,
        code: int | None = None,
        message: str = "",
        link: str | None = None,
        routine: bool = False,
    ) -> None:
        """Record one answered request (written at the next :meth:`flush`).

        ``code`` is None for a success. ``link`` is the kernel's name of the link acted on,
        when it differs from the ``name`` asked for (an altname). ``routine`` lines
        (successful read-only queries) are DEBUG, so a health check polling the daemon does
        not flood the log.
        """
        level, number = ("DEBUG", logging.DEBUG) if routine else ("INFO", logging.INFO)
        if not audit_logger.isEnabledFor(number):
            return
        if code is not None and self.throttle is not None and not self.throttle.allow(peer):
            return
        failed = code is not None
        self._lines.append(
            f"{level} "
            + fields(
                event="request",
                uid=peer.uid,
                gid=peer.gid,
                pid=peer.pid,
                op=op,
                name=name if link is None else link,
                requested=None if link is None else name,
                result="error" if failed else "ok",
                code=code,
                message=message if failed else None,
            )
        )

    def connection(self, peer: PeerCredentials, result: str, code: int, message: str) -> None:
        """Record a connection refused (``result`` "refused" or "busy") and write it now."""
        if not audit_logger.isEnabledFor(logging.WARNING):
            return
        if self.throttle is not None and not self.throttle.allow(peer, connection=True):
            return
        self._lines.append(
            "WARNING "
            + fields(
                event="connect",
                uid=peer.uid,
                gid=peer.gid,
                pid=peer.pid,
                result=result,
                code=code,
                message=message,
            )
        )
        self.flush()

    def tick(self, *, final: bool = False) -> None:
        """Write the summaries that are due (all of them with ``final``, at shutdown)."""
        if self.throttle is not None and audit_logger.isEnabledFor(logging.WARNING):
            self._lines.extend(self.throttle.summaries(final=final))
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
        data = text.encode("ascii")  # logfmt writes printable ASCII only
        while data:  # one write() in practice; loop for the rare partial write
            data = data[os.write(fd, data) :]
