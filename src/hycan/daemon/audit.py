"""The audit trail: one line per request and per refused connection, on stderr.

Lines use the daemon's one format (:mod:`hycan.daemon.logfmt`, grammar in SECURITY.md), so
no name, payload or message a client controls can forge, split or colour a line. Successful
read-only queries (PING, STATUS) are DEBUG, changes INFO, failures INFO and refusals WARNING.

Lines are budgeted per uid (:class:`Throttle`), with two buckets: failures and refusals
(a burst of 20, then 1 a second) and successful changes (a burst of 100, then 10 a second).
Beyond a budget nothing is dropped silently: failures are counted per uid, changes per
(op, link), and once a second an ``event=suppressed`` line per uid (failures) or per
(uid, op, link) (changes) says how many, from whom, over how long. So however many bytes a
client sends, the log grows by a bounded number of lines a second, and every change is
still accounted for.

Lines are written without a ``logging.LogRecord`` each: a connection's lines are formatted
together and written in one call, after its replies went out, off the client's critical
path. A write that fails (a full disk, a closed pipe) never raises: the lost lines are
counted in the next write that succeeds.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TextIO

from hycan._peercred import PeerCredentials
from hycan.daemon.logfmt import fields, value

audit_logger = logging.getLogger("hycan.audit")
"""Its level decides whether audit lines are written (INFO: yes; WARNING: refusals only)."""

FAILURE_BURST: Final = 20  # failure and refusal lines a uid may cause at once...
FAILURE_RATE: Final = 1.0  # ...and per second after that
CHANGE_BURST: Final = 100  # successful-change lines a uid may cause at once...
CHANGE_RATE: Final = 10.0  # ...and per second after that
SUMMARY_EVERY: Final = 1.0  # seconds between two summaries of one uid's suppressed lines
_MAX_FOLDED: Final = 1024  # (op, link) pairs counted per uid; the rest share one count

Target = str | bytes  # a link's own name, or the name as the client sent it


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float

    def take(self, now: float, burst: int, rate: float) -> bool:
        self.tokens = min(burst, self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass(slots=True)
class _Quota:
    failures: _Bucket
    changes: _Bucket
    pid: int = 0  # the last suppressed peer's pid
    requests: int = 0  # failed requests suppressed since ``failed_since``
    connections: int = 0  # refused connections suppressed since ``failed_since``
    failed_since: float = 0.0
    folded: dict[tuple[str, Target], int] = field(default_factory=dict)  # changes suppressed
    changed_since: float = 0.0


class Throttle:
    """Per-uid token buckets for audit lines; what they refuse is counted for summaries."""

    def __init__(
        self,
        burst: int = FAILURE_BURST,
        rate: float = FAILURE_RATE,
        clock: Callable[[], float] = time.monotonic,
        change_burst: int = CHANGE_BURST,
        change_rate: float = CHANGE_RATE,
    ) -> None:
        self.burst, self.rate = burst, rate
        self.change_burst, self.change_rate = change_burst, change_rate
        self._refill = max(burst / rate, change_burst / change_rate)  # empty to full
        self._clock = clock
        self._quotas: dict[int, _Quota] = {}

    def _quota(self, uid: int, now: float) -> _Quota:
        quota = self._quotas.get(uid)
        if quota is None:
            quota = self._quotas[uid] = _Quota(
                _Bucket(float(self.burst), now), _Bucket(float(self.change_burst), now)
            )
        return quota

    def allow(self, peer: PeerCredentials, *, connection: bool = False) -> bool:
        """A failure (or refused ``connection``) line of ``peer.uid``: False, and counted,
        when its budget is spent."""
        now = self._clock()
        quota = self._quota(peer.uid, now)
        if quota.failures.take(now, self.burst, self.rate):
            return True
        if not quota.requests + quota.connections:
            quota.failed_since = now
        if connection:
            quota.connections += 1
        else:
            quota.requests += 1
        quota.pid = peer.pid
        return False

    def allow_change(self, peer: PeerCredentials, op: str, target: Target) -> bool:
        """A successful change's line: False, and counted per (op, link), when the uid's
        budget for changes is spent."""
        now = self._clock()
        quota = self._quota(peer.uid, now)
        if quota.changes.take(now, self.change_burst, self.change_rate):
            return True
        if not quota.folded:
            quota.changed_since = now
        key = (op, target)
        if key not in quota.folded and len(quota.folded) >= _MAX_FOLDED:
            key = (op, "")  # too many distinct links this second: counted per op
        quota.folded[key] = quota.folded.get(key, 0) + 1
        quota.pid = peer.pid
        return False

    def summaries(self, *, final: bool = False) -> list[str]:
        """Summary lines for the uids whose suppressed lines are due (all with ``final``);
        forgets uids whose buckets are full again."""
        now = self._clock()
        lines = []
        for uid, quota in list(self._quotas.items()):
            count = quota.requests + quota.connections
            if count and (final or now - quota.failed_since >= SUMMARY_EVERY):
                lines.append(_failure_summary(uid, quota, now - quota.failed_since))
                quota.requests = quota.connections = 0
            if quota.folded and (final or now - quota.changed_since >= SUMMARY_EVERY):
                seconds = now - quota.changed_since
                lines += [
                    _change_summary(uid, quota.pid, op, target, n, seconds)
                    for (op, target), n in quota.folded.items()
                ]
                quota.folded.clear()
            idle = now - max(quota.failures.stamp, quota.changes.stamp)
            if not count and not quota.folded and idle >= self._refill:
                del self._quotas[uid]  # both buckets full again: a new quota is the same
        return lines


def _failure_summary(uid: int, quota: _Quota, seconds: float) -> str:
    parts = []
    if quota.requests:
        parts.append(f"{quota.requests} more failed requests")
    if quota.connections:
        parts.append(f"{quota.connections} more refused connections")
    return "WARNING " + fields(
        event="suppressed",
        uid=uid,
        pid=quota.pid,
        count=quota.requests + quota.connections,
        requests=quota.requests,
        connections=quota.connections,
        seconds=f"{seconds:.1f}",
        message=f"... and {' and '.join(parts)} from uid {uid} pid {quota.pid} in {seconds:.1f} s",
    )


def _change_summary(uid: int, pid: int, op: str, target: Target, count: int, seconds: float) -> str:
    shown = value(target) if target else "various links"
    return "INFO " + fields(
        event="suppressed",
        uid=uid,
        pid=pid,
        op=op,
        name=target or None,
        result="ok",
        count=count,
        seconds=f"{seconds:.1f}",
        message=f"... and {count} more {op} of {shown} from uid {uid} pid {pid} in {seconds:.1f} s",
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
        self._lost = 0  # lines a failed write could not store, said at the next good one

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
        failed = code is not None
        target = name if link is None else link
        throttle = self.throttle
        if throttle is not None and not routine:
            allowed = throttle.allow(peer) if failed else throttle.allow_change(peer, op, target)
            if not allowed:
                return
        # Written out rather than through fields(): this runs once per request. ``op`` is
        # an Op name or 0xNN, the ids are ints: only the names and the message need value().
        line = (
            f"{level} event=request uid={peer.uid} gid={peer.gid} pid={peer.pid} op={op} "
            f"name={value(target)}"
        )
        if link is not None:
            line += f" requested={value(name)}"
        if failed:
            line += f" result=error code={code} message={value(message)}"
        else:
            line += " result=ok"
        self._lines.append(line)

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

    def lease_ended(self, peer: PeerCredentials | None, name: str, problem: str | None) -> None:
        """Record a leased link deleted because its connection ended (``peer``), or at
        start-up because the daemon that held it is gone (``peer`` None); ``problem``:
        why the kernel kept it. Written at the next :meth:`flush`."""
        if not audit_logger.isEnabledFor(logging.INFO):
            return
        who = {} if peer is None else {"uid": peer.uid, "gid": peer.gid, "pid": peer.pid}
        holder = "connection closed" if peer is not None else "holder gone"
        result = (
            {"result": "deleted"} if problem is None else {"result": "kept", "message": problem}
        )
        self._lines.append(
            ("INFO " if problem is None else "WARNING ")
            + fields(event="lease-end", **who, name=name, cause=holder, **result)
        )

    def tick(self, *, final: bool = False) -> None:
        """Write the summaries that are due (all of them with ``final``, at shutdown)."""
        if self.throttle is not None and audit_logger.isEnabledFor(logging.WARNING):
            self._lines.extend(self.throttle.summaries(final=final))
        self.flush()

    def flush(self) -> None:
        """Write the collected lines in one call. Never raises: a log that cannot be
        written (a full disk, a closed pipe) costs lines, which the next write that
        succeeds counts, never the daemon or a client."""
        if not self._lines:
            return
        if self._lost:
            self._lines.insert(
                0,
                "WARNING "
                + fields(
                    event="lost",
                    count=self._lost,
                    message=f"{self._lost} log lines could not be written",
                ),
            )
        lines = len(self._lines)
        try:
            self._write()
        except OSError:
            self._lost += lines - (1 if self._lost else 0)
        else:
            self._lost = 0
        finally:
            self._lines.clear()

    def _write(self) -> None:
        now = time.time()
        if int(now) != self._second:  # strftime once a second, not once a request
            self._second = int(now)
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self._second))
        prefix = f"{self._stamp},{int(now % 1 * 1000):03d} hycan-daemon[{self._pid}] "
        text = "".join(f"{prefix}{line}\n" for line in self._lines)
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
