"""The group database, as the daemon reads it: who is a member of which group (cached for
a second, forgotten when /etc/passwd or /etc/group changes) and the names of uids."""

from __future__ import annotations

import grp
import os
import pwd
import time
from collections.abc import Callable

Account = tuple[str, int]  # a uid's user name and primary gid
_MEMBERS_TTL = 1.0  # seconds a membership answer is reused, at most
_MEMBERS_MAX = 4096  # uids remembered at most
_DATABASE_FILES = ("/etc/passwd", "/etc/group")  # a change to either forgets every answer


def _files_version() -> tuple[int, ...]:
    stamps = []
    for path in _DATABASE_FILES:
        try:
            st = os.stat(path)
        except OSError:
            stamps.append(-1)
        else:
            stamps += [st.st_mtime_ns, st.st_ino]
    return tuple(stamps)


def _account(uid: int) -> Account | None:
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return None
    return entry.pw_name, entry.pw_gid


def _group_members(gid: int) -> tuple[str, ...]:
    try:
        return tuple(grp.getgrgid(gid).gr_mem)
    except KeyError:
        return ()


class GroupDatabase:
    """Whether the group database lists a uid as a member of some gids: the account's
    primary group, or a supplementary member.

    Answers are kept at most ``_MEMBERS_TTL`` seconds, and forgotten at once when
    /etc/passwd or /etc/group changes (one ``stat`` each per lookup), so ``usermod`` and
    ``gpasswd -d`` apply to the next connection.
    """

    def __init__(
        self,
        account: Callable[[int], Account | None] = _account,
        members: Callable[[int], tuple[str, ...]] = _group_members,
        clock: Callable[[], float] = time.monotonic,
        version: Callable[[], tuple[int, ...]] = _files_version,
    ) -> None:
        self._account, self._members, self._clock, self._version = account, members, clock, version
        self._cache: dict[tuple[int, frozenset[int]], tuple[float, str | None]] = {}
        self._seen: tuple[int, ...] = ()
        self._names: dict[int, str | None] = {}
        self._names_seen: tuple[int, ...] = ()

    def refusal(self, uid: int, gids: frozenset[int]) -> str | None:
        """None if ``uid`` is listed in one of ``gids``, else why it is not."""
        version = self._version()
        if version != self._seen or len(self._cache) >= _MEMBERS_MAX:
            self._cache.clear()
            self._seen = version
        key = (uid, gids)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < _MEMBERS_TTL:
            return cached[1]
        answer = self._look_up(uid, gids)
        self._cache[key] = (now, answer)
        return answer

    def name_of(self, uid: int) -> str | None:
        """The account name of ``uid``, None if it has none (reread when the files change)."""
        version = self._version()
        if version != self._names_seen or len(self._names) >= _MEMBERS_MAX:
            self._names.clear()
            self._names_seen = version
        if uid not in self._names:
            account = self._account(uid)
            self._names[uid] = account[0] if account is not None else None
        return self._names[uid]

    def describe(self, uid: int) -> str:
        """``uid 1001 (alice)``, or ``uid 1001`` for a uid without an account."""
        name = self.name_of(uid)
        return f"uid {uid} ({name})" if name else f"uid {uid}"

    def _look_up(self, uid: int, gids: frozenset[int]) -> str | None:
        account = self._account(uid)
        if account is None:
            return (
                f"permission denied: uid {uid} has no account here (a subordinate uid of a "
                "user namespace?); only users the group database lists as members are "
                "admitted through the group"
            )
        name, primary = account
        if primary in gids or any(name in self._members(gid) for gid in gids):
            return None
        return (
            f"permission denied: {name} (uid {uid}) holds the group only from a session "
            "that predates a change: the group database no longer lists it as a member"
        )


def describe_uid(uid: int) -> str:
    """``uid 1001 (alice)``, or ``uid 1001`` for a uid without an account (the system's
    group database)."""
    return _SYSTEM.describe(uid)


_SYSTEM = GroupDatabase()
