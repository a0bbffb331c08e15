"""Who may ask (peer credentials) and what may be done (interface policy).

Both are pure functions of their inputs so they can be tested without sockets or a kernel.
"""

from __future__ import annotations

import fnmatch
import grp
import os
import re
from collections.abc import Iterable
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


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """Admit root, the daemon's own uid, listed uids, and members of listed groups."""

    uids: frozenset[int]
    gids: frozenset[int]
    group_names: tuple[str, ...] = ()

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
            return None
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
