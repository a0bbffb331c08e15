"""Who owns a link hycan created, recorded in the link itself: its alias (IFLA_IFALIAS).

Only CAP_NET_ADMIN can set a link's alias, it lives as long as the link, ``ip link`` shows
it, and it needs no state file that could drift from the kernel. hycan writes exactly::

    hycan owner=UID                      a link created by UID
    hycan owner=UID lease=PID.START      ... leased: deleted when its connection closes

``PID.START`` names the hycan-daemon process holding the lease (its pid and its start time
in clock ticks since boot, field 22 of ``/proc/PID/stat``): a daemon that starts deletes
the leased links whose holder no longer runs, and leaves those of another live daemon
alone. Any other alias (an admin's "front bus", an older hycan's none) means "nobody".
"""

from __future__ import annotations

import functools
import os
import re
from typing import NamedTuple

_ALIAS = re.compile(r"hycan owner=(0|[1-9][0-9]{0,9})(?: lease=([1-9][0-9]{0,9})\.([0-9]{1,20}))?")
_MAX_UID = 0xFFFFFFFE


class Owner(NamedTuple):
    """A link's owner, and the daemon holding its lease (``None``: not leased)."""

    uid: int
    lease: str | None = None  # "PID.START" of the daemon process holding the lease

    def alias(self) -> str:
        """The alias that records this owner."""
        if self.lease is None:
            return f"hycan owner={self.uid}"
        return f"hycan owner={self.uid} lease={self.lease}"


@functools.lru_cache(maxsize=1024)
def owner_of(alias: str | None) -> Owner | None:
    """The owner an alias records, or None when it is not hycan's (strict: one format)."""
    if alias is None:
        return None
    match = _ALIAS.fullmatch(alias)
    if match is None:
        return None
    uid = int(match[1])
    if uid > _MAX_UID:
        return None
    lease = f"{match[2]}.{match[3]}" if match[2] is not None else None
    return Owner(uid, lease)


def _start_time(pid: int) -> str | None:
    """Field 22 (starttime) of /proc/PID/stat, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields count from the
    # last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def this_process() -> str:
    """The lease holder token of this process: ``PID.START``."""
    pid = os.getpid()
    return f"{pid}.{_start_time(pid) or 0}"


def holder_alive(token: str) -> bool:
    """Whether the process a lease token names still runs (same pid, same start time)."""
    pid, _, start = token.partition(".")
    return pid.isdigit() and _start_time(int(pid)) == start
