"""Every decision the daemon makes about a client, in one place.

Two questions, both answered without sockets or a kernel:

- **May this peer connect?** (:class:`AccessPolicy`) root, the daemon's own uid,
  ``--allow-uid`` uids and members of ``--group``.
- **May this peer do this to this link?** (:class:`Policy`) in this order:

  1. The floor, which no rule lifts: hycan creates and deletes only vcan and vxcan
     links.
  2. Owners: a link hycan created belongs to the uid that created it (recorded in the
     link's alias, :mod:`hycan._owner`). Its owner may do anything to it; root and hycan
     admins (``--admin-group``, ``admins`` in the policy file) too; nobody else, whatever
     the rules say.
  3. Rules, for links nobody owns (the admin's ``can0``, a vcan made at boot) and for
     creating links: the **last** rule that matches the peer, the verb and the link
     decides (allow or deny); when none matches, the answer is no.

  Quotas: a peer may own at most ``max_links_per_uid`` links (root: no limit), or the
  ``max_links`` of the rule that allowed the create.

Network namespaces (:mod:`hycan._netns`): a rule is about the kinds of namespace its
``netns`` names (the daemon's own unless said). A peer may enter a namespace of a kind only
if some rule allows it something there (:meth:`Policy.entry_refusal`); in a namespace of
its own, aliases prove nothing (it can write them), so only the rules decide there. A CAN
gateway route needs ``route`` on both ends and one end of the peer's own
(:meth:`Policy.route_refusal`).

Without a policy file the rules are the built-in defaults plus one rule per
``--allow-iface`` glob (:meth:`Rules.defaults`); docs/policy.md has the file format.
"""

from __future__ import annotations

import enum
import fnmatch
import grp
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from hycan._netns import Where
from hycan._owner import owner_of
from hycan._peercred import PeerCredentials
from hycan._protocol import Op
from hycan.backends.base import LinkRef
from hycan.daemon.groups import GroupDatabase, describe_uid

DEFAULT_GROUP = "hycan"
DEFAULT_MAX_LINKS = 32
NO_KIND = "none"  # the kind a rule names links by whose kernel reports no kind (lo, a NIC)


class Verb(enum.StrEnum):
    """What a rule allows or denies (the names the policy file uses)."""

    CREATE = "create"
    UP = "up"
    DOWN = "down"
    DELETE = "delete"
    SET_MTU = "set-mtu"
    SET_CAN = "set-can"  # bitrate, sample point, CAN FD, restart-ms, ...
    RESTART = "restart"
    ROUTE = "route"  # a CAN gateway route from or to the link


ALL_VERBS = frozenset(Verb)
VERB_OF_OP = {
    Op.CREATE_VCAN: Verb.CREATE,
    Op.CREATE_LINK: Verb.CREATE,
    Op.INTERFACE_UP: Verb.UP,
    Op.INTERFACE_DOWN: Verb.DOWN,
    Op.DELETE: Verb.DELETE,
    Op.SET_MTU: Verb.SET_MTU,
    Op.SET_CAN: Verb.SET_CAN,
    Op.CAN_RESTART: Verb.RESTART,
}
_PHRASE = {
    Verb.CREATE: "create",
    Verb.UP: "bring up",
    Verb.DOWN: "bring down",
    Verb.DELETE: "delete",
    Verb.SET_MTU: "set the MTU of",
    Verb.SET_CAN: "set CAN bit timing of",
    Verb.RESTART: "restart",
    Verb.ROUTE: "route frames from or to",
}
CREATABLE = frozenset({"vcan", "vxcan"})  # the kinds of link hycan creates (and may delete)
HOST_ONLY = frozenset({Where.HOST})


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
class Who:
    """Whom a rule is for: these uids and the members of these gids; nobody named means
    every admitted peer."""

    uids: frozenset[int] = frozenset()
    gids: frozenset[int] = frozenset()

    @property
    def everyone(self) -> bool:
        """Whether this names nobody in particular (so it matches every peer)."""
        return not self.uids and not self.gids

    def matches(self, peer: PeerCredentials, database: GroupDatabase) -> bool:
        """Whether ``peer`` is one of these: a listed uid, or a member of a listed group
        (its kernel credentials hold the group and the group database lists it)."""
        if self.everyone or peer.uid in self.uids:
            return True
        held = self.gids.intersection((peer.gid, *peer.groups))
        return bool(held) and database.refusal(peer.uid, frozenset(held)) is None

    def describe(self) -> str:
        """``everyone``, or the uids and gids (with names where they have one)."""
        if self.everyone:
            return "everyone"
        parts = [describe_uid(uid) for uid in sorted(self.uids)]
        parts += [_describe_gid(gid) for gid in sorted(self.gids)]
        return ", ".join(parts)


def _describe_gid(gid: int) -> str:
    try:
        return f"group {grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"


ROOT_ONLY = Who(frozenset({0}), frozenset())


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: ``allow`` (or deny) ``verbs`` to ``who`` on links whose own name matches
    one of ``names`` (globs; none: any name) and whose kind is one of ``kinds`` (none: any
    kind), in the kinds of network namespace ``netns`` names (:class:`~hycan._netns.Where`:
    the daemon's own unless said). ``max_links`` caps what a peer may own when this rule
    allows its create. ``origin`` says where the rule came from, for messages and
    ``--check-policy``."""

    allow: bool
    verbs: frozenset[Verb]
    who: Who = Who()
    names: tuple[str, ...] = ()
    kinds: frozenset[str] = frozenset()
    max_links: int | None = None
    origin: str = ""
    netns: frozenset[Where] = HOST_ONLY
    _matcher: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One compiled regex for all globs (fnmatchcase per glob costs microseconds a call).
        pattern = "|".join(fnmatch.translate(glob) for glob in self.names)
        object.__setattr__(self, "_matcher", re.compile(pattern) if pattern else None)

    def covers(self, verb: Verb, name: str, kind: str | None, where: Where = Where.HOST) -> bool:
        """Whether this rule is about ``verb`` on a link named ``name`` of ``kind`` in a
        namespace of kind ``where``."""
        if verb not in self.verbs or where not in self.netns:
            return False
        if self.kinds and (kind or NO_KIND) not in self.kinds:
            return False
        return self._matcher is None or self._matcher.match(name) is not None

    def describe(self) -> str:
        """The rule in one line, as ``--check-policy`` prints it."""
        verbs = ", ".join(v.value for v in Verb if v in self.verbs)
        links = []
        if self.kinds:
            links.append("kind " + " or ".join(sorted(self.kinds)))
        if self.names:
            links.append("name " + " or ".join(self.names))
        what = " with ".join(links) if links else "any link"
        if self.netns != HOST_ONLY:
            what += " in " + " or ".join(f"{w.value} namespaces" for w in Where if w in self.netns)
        quota = f", at most {self.max_links} links owned" if self.max_links is not None else ""
        effect = "allow" if self.allow else "deny"
        return f"{effect} {self.who.describe()}: {verbs} on {what}{quota}"


@dataclass(frozen=True, slots=True)
class Rules:
    """A whole policy: rules in order, hycan admins, the default per-uid link quota, and
    where it came from (a file path, or "built-in defaults")."""

    rules: tuple[Rule, ...]
    admins: Who = ROOT_ONLY
    max_links_per_uid: int = DEFAULT_MAX_LINKS
    source: str = "built-in defaults"

    @classmethod
    def defaults(
        cls,
        allow_iface: Iterable[str] = (),
        *,
        admins: Who | None = None,
        max_links_per_uid: int = DEFAULT_MAX_LINKS,
    ) -> Rules:
        """What hycan-daemon does without a policy file (deploy/policy/default.toml says
        the same): every admitted peer may create vcans and vxcan pairs (they are then
        its own), bring the vcans nobody owns up and down, set their MTU and route to
        them, do anything hycan can in network namespaces it owns, and act on the links
        each ``--allow-iface`` glob names (up, down, MTU, CAN settings, restart, route)."""
        rules = [
            Rule(True, frozenset({Verb.CREATE}), kinds=CREATABLE, origin="built-in default"),
            Rule(
                True,
                frozenset({Verb.UP, Verb.DOWN, Verb.SET_MTU, Verb.ROUTE}),
                kinds=frozenset({"vcan"}),
                origin="built-in default",
            ),
            Rule(True, ALL_VERBS, netns=frozenset({Where.OWN}), origin="built-in default"),
        ]
        rules += [iface_rule(glob) for glob in allow_iface]
        return cls(tuple(rules), admins or ROOT_ONLY, max_links_per_uid)

    def describe(self) -> list[str]:
        """The policy as ``hycan-daemon --check-policy`` prints it, one line each."""
        others = Who(self.admins.uids - {0}, self.admins.gids)
        admins = "root" if others.everyone else f"root, {others.describe()}"
        lines = [f"policy: {self.source}", f"admins: {admins}"]
        lines.append(f"max links per uid: {self.max_links_per_uid} (root: no limit)")
        lines.append("owners: a link's owner, root and admins may do anything to it")
        lines += [f"rule {n} ({r.origin}): {r.describe()}" for n, r in enumerate(self.rules, 1)]
        lines.append("otherwise: deny")
        return lines


IFACE_VERBS = frozenset({Verb.UP, Verb.DOWN, Verb.SET_MTU, Verb.SET_CAN, Verb.RESTART, Verb.ROUTE})


def iface_rule(glob: str) -> Rule:
    """The rule one ``--allow-iface GLOB`` stands for."""
    return Rule(True, IFACE_VERBS, names=(glob,), origin=f"--allow-iface {glob}")


class Decision:
    """A yes (``refusal`` None) or a no with its reason; ``rule`` is the rule that decided
    (None when ownership or the floor did), whose ``max_links`` applies to a create."""

    __slots__ = ("refusal", "rule")

    def __init__(self, refusal: str | None, rule: Rule | None = None) -> None:
        self.refusal = refusal
        self.rule = rule


_YES = Decision(None)


class Policy:
    """Answers "may ``peer`` do ``verb`` to ``link``?" from :class:`Rules` (see the module)."""

    def __init__(self, rules: Rules, database: GroupDatabase | None = None) -> None:
        self.rules = rules
        self.database = database or GroupDatabase()
        # Per verb, the rules about it, last first: a decision scans only those.
        self._by_verb = {
            verb: tuple(r for r in reversed(rules.rules) if verb in r.verbs) for verb in Verb
        }

    @classmethod
    def unrestricted(cls, uid: int) -> Policy:
        """For the in-process fallback, which acts with its caller's own privileges: the
        floor still holds, everything else is allowed."""
        everything = Rule(True, ALL_VERBS, kinds=frozenset(), origin="in-process")
        return cls(Rules((everything,), Who(frozenset({0, uid}), frozenset()), 2**31, "in-process"))

    def is_admin(self, peer: PeerCredentials) -> bool:
        """root, or one of the policy's admins."""
        admins = self.rules.admins
        return peer.uid == 0 or (not admins.everyone and admins.matches(peer, self.database))

    def decide(
        self, peer: PeerCredentials, verb: Verb, link: LinkRef, where: Where = Where.HOST
    ) -> Decision:
        """May ``peer`` do ``verb`` to ``link`` (for CREATE: the link it would be) in a
        network namespace of kind ``where``? In a namespace the peer owns, aliases prove
        nothing (it can write them itself): only the rules decide there."""
        if verb in (Verb.CREATE, Verb.DELETE) and link.kind not in CREATABLE:
            return Decision(_floor(verb, link))
        owner = owner_of(link.alias) if where is not Where.OWN else None
        if owner is not None:
            if owner.uid == peer.uid or self.is_admin(peer):
                return _YES
            return Decision(
                f"refusing to {_PHRASE[verb]} {link.name}: {link.name} belongs to "
                f"{self.database.describe(owner.uid)}; only its owner and hycan admins may "
                "change it"
            )
        for rule in self._by_verb[verb]:
            if rule.covers(verb, link.name, link.kind, where) and rule.who.matches(
                peer, self.database
            ):
                if rule.allow:
                    return Decision(None, rule)
                return Decision(
                    f"refusing to {_PHRASE[verb]} {link.name}: denied by {rule.origin} "
                    f"({self.rules.source})",
                    rule,
                )
        return Decision(self._no_rule(verb, link, where))

    def refusal(
        self, peer: PeerCredentials, verb: Verb, link: LinkRef, where: Where = Where.HOST
    ) -> str | None:
        """None if ``peer`` may do ``verb`` to ``link``, else why not."""
        return self.decide(peer, verb, link, where).refusal

    def allowed(
        self, peer: PeerCredentials, link: LinkRef, where: Where = Where.HOST
    ) -> list[Verb]:
        """Every verb but CREATE that ``peer`` may do to ``link`` (for LIST)."""
        return [
            verb
            for verb in Verb
            if verb is not Verb.CREATE and self.decide(peer, verb, link, where).refusal is None
        ]

    def entry_refusal(self, peer: PeerCredentials, where: Where, owner: int | None) -> str | None:
        """None if ``peer`` may act in a network namespace of kind ``where`` at all (root,
        admins, and whom some rule allows something there), else why not. ``owner`` is
        the uid that created the namespace's user namespace (None: the initial one)."""
        if where is Where.HOST or self.is_admin(peer):
            return None
        for rule in self.rules.rules:
            if rule.allow and where in rule.netns and rule.who.matches(peer, self.database):
                return None
        whose = (
            "it belongs to the initial user namespace (a namespace made by root: `ip netns "
            "add`, a rootful container)"
            if owner is None
            else f"its user namespace was made by {self.database.describe(owner)}"
            if where is Where.OTHER
            else "it is a namespace of your own"
        )
        return (
            f"refusing to act in this network namespace: {whose}, and no rule of "
            f"{self.rules.source} admits you to {where.value} namespaces (an admin can add "
            f'netns = ["{where.value}"] to a rule for you)'
        )

    def route_refusal(self, peer: PeerCredentials, src: LinkRef, dst: LinkRef) -> str | None:
        """None if ``peer`` may route CAN frames between ``src`` and ``dst`` (links of the
        daemon's namespace), else why not: both ends must allow ROUTE, and one end must be
        the peer's own link (admins: any)."""
        for end in (src, dst):
            refusal = self.refusal(peer, Verb.ROUTE, end)
            if refusal is not None:
                return refusal
        if self.is_admin(peer):
            return None
        for end in (src, dst):
            owner = owner_of(end.alias)
            if owner is not None and owner.uid == peer.uid:
                return None
        return (
            f"refusing to route between {src.name} and {dst.name}: neither is a link of "
            "yours (a route needs one end you created, such as your vxcan's peer)"
        )

    def max_links(self, peer: PeerCredentials, decision: Decision) -> int | None:
        """How many links ``peer`` may own once ``decision`` allowed a create (None: no
        limit, for root)."""
        if peer.uid == 0:
            return None
        rule = decision.rule
        if rule is not None and rule.max_links is not None:
            return rule.max_links
        return self.rules.max_links_per_uid

    def _no_rule(self, verb: Verb, link: LinkRef, where: Where) -> str:
        what = f"{link.name} is a {link.kind or 'non-virtual'} link nobody owns"
        if verb is Verb.CREATE:
            what = f"{link.name} is not a name you may create"
        if where is not Where.HOST:
            return (
                f"refusing to {_PHRASE[verb]} {link.name}: no rule of {self.rules.source} "
                f"allows it in {where.value} network namespaces"
            )
        if self.rules.source == "built-in defaults":
            globs = [g for r in self.rules.rules if r.origin.startswith("--allow") for g in r.names]
            rule = (
                f"allowed: your own links, vcan links nobody owns and names matching "
                f"{', '.join(globs)}"
                if globs
                else "allowed: your own links and vcan links nobody owns; an admin can add "
                "--allow-iface GLOB or a policy file"
            )
        else:
            rule = f"no rule of {self.rules.source} allows it"
        return f"refusing to {_PHRASE[verb]} {link.name}: {what} ({rule})"


def _floor(verb: Verb, link: LinkRef) -> str:
    if verb is Verb.CREATE:
        return f"refusing to create {link.name}: hycan creates only vcan and vxcan links"
    return (
        f"refusing to delete {link.name}: it is a {link.kind or 'non-virtual'} link "
        "and hycan only deletes vcan and vxcan links"
    )
