"""Who may ask (peer credentials) and what may be done (interface policy).

Both can be tested without sockets or a kernel; who is a member of the group comes from the
group database (injectable, cached for a second).
"""

from __future__ import annotations

import fnmatch
import grp
import os
import pwd
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hycan._peercred import PeerCredentials
from hycan._protocol import Op
from hycan.backends.base import LinkRef

DEFAULT_GROUP = "hycan"
_VERBS = {
    Op.INTERFACE_UP: "bring up",
    Op.INTERFACE_DOWN: "bring down",
    Op.SET_MTU: "set the MTU of",
    Op.SET_CAN: "set CAN bit timing of",
    Op.CAN_RESTART: "restart",
}


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


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """Admit root, the daemon's own uid, listed uids, and members of listed groups.

    A peer is a member when its kernel credentials hold the group (what the socket's file
    mode also checks) **and** the group database lists it: a subordinate uid of a member's
    user namespace keeps the member's groups but has no account (it would otherwise count
    as a uid of its own against every per-uid limit), and a member removed from the group
    is refused at once even if its old session still holds the gid.
    """

    uids: frozenset[int]
    gids: frozenset[int]
    group_names: tuple[str, ...] = ()
    database: GroupDatabase = field(default_factory=GroupDatabase, compare=False)

    @classmethod
    def build(
        cls, *, allow_uids: Iterable[int] = (), group: str | None = DEFAULT_GROUP
    ) -> AccessPolicy:
        """Resolve the daemon's options. A group that does not exist admits nobody extra."""
        gids: set[int] = set()
        names: tuple[str, ...] = ()
        if group:
            try:
                gids.add(grp.getgrnam(group).gr_gid)
                names = (group,)
            except KeyError:
                pass
        return cls(frozenset({0, os.geteuid(), *allow_uids}), frozenset(gids), names)

    def authorize(self, peer: PeerCredentials) -> str | None:
        """None if ``peer`` may use the daemon, else the reason it may not."""
        if peer.uid in self.uids:
            return None
        if self.gids & {peer.gid, *peer.groups}:
            return self.database.refusal(peer.uid, self.gids)
        groups = f" or members of group {', '.join(self.group_names)}" if self.group_names else ""
        return (
            f"permission denied: uid {peer.uid} may not use hycan-daemon (allowed: uids "
            f"{', '.join(map(str, sorted(self.uids)))}{groups}); ask an admin to add you to "
            "the hycan group or start the daemon with --allow-uid"
        )


@dataclass(frozen=True, slots=True)
class InterfacePolicy:
    """vcan links always; other links only when their name matches an ``--allow-iface`` glob."""

    allow_globs: tuple[str, ...] = ()
    _matcher: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One compiled regex for all globs (fnmatchcase per glob costs microseconds a call).
        pattern = "|".join(fnmatch.translate(glob) for glob in self.allow_globs)
        object.__setattr__(self, "_matcher", re.compile(pattern) if pattern else None)

    def name_allowed(self, name: str) -> bool:
        """Whether an admin allow-listed this name (``--allow-iface`` globs, case-sensitive)."""
        return self._matcher is not None and self._matcher.match(name) is not None

    def refusal(self, op: Op, link: LinkRef) -> str | None:
        """None if ``op`` (UP/DOWN/SET_*) may act on ``link``, else why not.

        Globs match the link's own name as the kernel reports it, never an altname the
        client used for it. (DELETE of a non-vcan link is refused by the handler whatever
        the policy.)
        """
        if link.kind == "vcan" or self.name_allowed(link.name):
            return None
        what = f"{link.name} is a {link.kind or 'non-virtual'} link"
        rule = (
            f"allowed: vcan links and names matching {', '.join(self.allow_globs)}"
            if self.allow_globs
            else "allowed: vcan links only; an admin can add --allow-iface GLOB"
        )
        return f"refusing to {_VERBS.get(op, op.name)} {link.name}: {what} ({rule})"
