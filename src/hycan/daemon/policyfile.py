"""The policy file (``/etc/hycan/policy.toml``): TOML, read with ``tomllib``, into :class:`Rules`.

Default deny: only what a rule allows is allowed (docs/policy.md has the format). Anything
the daemon does not understand (an unknown key, a value of the wrong type, a verb, user or
group that does not exist) is refused with the file's line and column, so a typo can never
quietly widen or narrow the policy. tomllib reports no positions for values; ``_Locator``
finds them in the text for the layout this format uses (keys at the start of a line under
``[[rule]]`` / ``[admins]`` headers, or in the ``admins = {...}`` inline table).
"""

from __future__ import annotations

import grp
import pwd
import re
import sys
import tomllib
from collections.abc import Callable, Sequence
from typing import Any

from hycan._netns import Where
from hycan.daemon.policy import (
    ALL_VERBS,
    DEFAULT_MAX_LINKS,
    HOST_ONLY,
    Rule,
    Rules,
    Verb,
    Who,
    iface_rule,
)

Lookup = Callable[[str], int | None]
_MAX_QUOTA = 100_000
_MAX_ID = 0xFFFFFFFE
_KIND = re.compile(r"[a-z0-9_-]{1,15}")
_GLOB_FORBIDDEN = re.compile(r"[\s/\x00]")
_TOP_KEYS = {"max_links_per_uid", "admins", "rule"}
_WHO_KEYS = {"users", "uids", "groups"}
_RULE_KEYS = _WHO_KEYS | {"allow", "deny", "names", "kinds", "max_links", "netns"}


class PolicyFileError(Exception):
    """A policy file the daemon refuses: ``PATH:LINE:COLUMN: problem`` (a flag, line 0:
    ``--flag: problem``)."""

    def __init__(self, path: str, line: int, column: int, problem: str) -> None:
        super().__init__(f"{path}:{line}:{column}: {problem}" if line else f"{path}: {problem}")
        self.path, self.line, self.column, self.problem = path, line, column, problem


def _user(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _group(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


class _Locator:
    """Where a key (or an element of its array) is in the source text: (line, column)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.rules: list[int] = []  # line index of each [[rule]] header
        self.admins: int | None = None  # line index of [admins] or `admins =`
        for number, line in enumerate(self.lines):
            stripped = line.strip()
            if re.fullmatch(r"\[\[\s*rule\s*\]\]\s*(#.*)?", stripped):
                self.rules.append(number)
            elif re.fullmatch(r"\[\s*admins\s*\]\s*(#.*)?", stripped) or re.match(
                r"admins\s*=", stripped
            ):
                self.admins = number

    def _section(self, where: int | str | None) -> tuple[int, int]:
        """Line range [start, end) of the top level (None), a rule (its index), or admins."""
        headers = sorted([*self.rules, *([self.admins] if self.admins is not None else [])])
        if where is None:
            return 0, headers[0] if headers else len(self.lines)
        start = self.rules[where] if isinstance(where, int) else (self.admins or 0)
        if where == "admins" and self.lines[start].lstrip().startswith("admins"):
            return start, start + 1  # inline table
        later = [h for h in headers if h > start]
        return start, later[0] if later else len(self.lines)

    def find(
        self, where: int | str | None, key: str | None, item: str | None = None
    ) -> tuple[int, int]:
        """1-based (line, column) of ``key`` in a section, or of ``item`` after it."""
        start, end = self._section(where)
        if key is None:
            return start + 1, 1
        pattern = re.compile(rf"(^\s*|[{{,]\s*){re.escape(key)}\s*=")
        for number in range(start, end):
            match = pattern.search(self.lines[number])
            if match is None:
                continue
            column = match.end(1)
            if item is not None:
                for later in range(number, end):
                    offset = self.lines[later].find(item, column if later == number else 0)
                    if offset >= 0:
                        return later + 1, offset + 1
            return number + 1, column + 1
        return start + 1, 1


class _Parser:
    def __init__(self, text: str, source: str, users: Lookup, groups: Lookup) -> None:
        self.source, self.users, self.groups = source, users, groups
        self.where = _Locator(text)

    def fail(
        self, where: int | str | None, key: str | None, problem: str, item: Any = None
    ) -> PolicyFileError:
        shown = None if item is None else (f'"{item}"' if isinstance(item, str) else str(item))
        line, column = self.where.find(where, key, shown)
        return PolicyFileError(self.source, line, column, problem)

    def unknown(self, table: dict[str, Any], known: set[str], where: int | str | None) -> None:
        for key in table:
            if key not in known:
                raise self.fail(
                    where, key, f"unknown key {key!r} (known: {', '.join(sorted(known))})"
                )

    def strings(self, table: dict[str, Any], key: str, where: int | str | None) -> list[str]:
        value = table.get(key, [])
        if type(value) is not list or not value or any(type(v) is not str for v in value):
            raise self.fail(where, key, f"{key} must be a non-empty array of strings")
        return list(value)

    def number(
        self, value: Any, where: int | str | None, key: str, top: int, item: Any = None
    ) -> int:
        if type(value) is not int or not 0 <= value <= top:
            raise self.fail(where, key, f"{key} must be a whole number in 0..{top}", item)
        return value

    def named(self, table: dict[str, Any], key: str, where: int | str) -> set[int]:
        """The ids of the user (``users``) or group (``groups``) names under ``key``."""
        lookup, what = (self.users, "user") if key == "users" else (self.groups, "group")
        ids = set()
        for name in self.strings(table, key, where) if key in table else ():
            found = lookup(name)
            if found is None:
                raise self.fail(where, key, f"no such {what}: {name}", name)
            ids.add(found)
        return ids

    def who(self, table: dict[str, Any], where: int | str) -> Who:
        uids = self.named(table, "users", where)
        gids = self.named(table, "groups", where)
        if "uids" in table:
            value = table["uids"]
            if type(value) is not list or not value:
                raise self.fail(where, "uids", "uids must be a non-empty array of numbers")
            uids.update(self.number(v, where, "uids", _MAX_ID, v) for v in value)
        return Who(frozenset(uids), frozenset(gids))

    def rule(self, table: Any, n: int) -> Rule:
        if type(table) is not dict:
            raise self.fail(n, None, "a rule must be a table ([[rule]])")
        self.unknown(table, _RULE_KEYS, n)
        if ("allow" in table) == ("deny" in table):
            raise self.fail(n, None, "a rule needs exactly one of allow = [...] or deny = [...]")
        effect = "allow" if "allow" in table else "deny"
        raw = table[effect]
        if raw == "all":
            verbs = set(ALL_VERBS)
        else:
            verbs = set()
            for verb in self.strings(table, effect, n):
                if verb == "all":
                    verbs |= ALL_VERBS
                elif verb in Verb._value2member_map_:
                    verbs.add(Verb(verb))
                else:
                    known = ", ".join(v.value for v in Verb)
                    raise self.fail(n, effect, f"unknown verb {verb!r} (known: {known}, all)", verb)
        names = tuple(self.strings(table, "names", n)) if "names" in table else ()
        for glob in names:
            if not glob or len(glob) > 64 or _GLOB_FORBIDDEN.search(glob):
                raise self.fail(
                    n,
                    "names",
                    f"bad name glob {glob!r}: 1 to 64 characters, no space, / or NUL",
                    glob,
                )
        kinds = self.strings(table, "kinds", n) if "kinds" in table else []
        for kind in kinds:
            if not _KIND.fullmatch(kind):
                raise self.fail(
                    n,
                    "kinds",
                    f"bad kind {kind!r}: a link kind such as vcan, can, veth, or none",
                    kind,
                )
        netns = set(HOST_ONLY)
        if "netns" in table:
            netns = set()
            for value in self.strings(table, "netns", n):
                if value not in Where._value2member_map_:
                    known = ", ".join(w.value for w in Where)
                    raise self.fail(
                        n,
                        "netns",
                        f"unknown network namespace kind {value!r} (known: {known})",
                        value,
                    )
                netns.add(Where(value))
        quota = None
        if "max_links" in table:
            if effect != "allow" or Verb.CREATE not in verbs:
                raise self.fail(n, "max_links", "max_links needs a rule that allows create")
            quota = self.number(table["max_links"], n, "max_links", _MAX_QUOTA)
        return Rule(
            effect == "allow",
            frozenset(verbs),
            self.who(table, n),
            names,
            frozenset(kinds),
            quota,
            f"{self.source}:{self.where.rules[n] + 1 if n < len(self.where.rules) else 1}",
            frozenset(netns),
        )


def admin_groups_of(names: Sequence[str], groups: Lookup = _group) -> Who:
    """root and the members of the ``--admin-group`` groups (which must exist)."""
    gids = set()
    for name in names:
        gid = groups(name)
        if gid is None:
            raise PolicyFileError("--admin-group", 0, 0, f"no such group: {name}")
        gids.add(gid)
    return Who(frozenset({0}), frozenset(gids))


def parse(
    text: str,
    source: str,
    *,
    allow_iface: Sequence[str] = (),
    admin_groups: Sequence[str] = (),
    max_links_per_uid: int = DEFAULT_MAX_LINKS,
    users: Lookup = _user,
    groups: Lookup = _group,
) -> Rules:
    """The rules of a policy file's ``text``: the ``--allow-iface`` rules first, then the
    file's in order (the last match decides); ``--admin-group`` adds admins; the file's
    ``max_links_per_uid`` wins over the flag's."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        # "(at end of document)": the position is just past the last line
        line, column = (int(found[1]), int(found[2])) if found else (text.count("\n") + 1, 1)
        problem = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise PolicyFileError(source, line, column, f"not valid TOML: {problem}") from None
    parser = _Parser(text, source, users, groups)
    parser.unknown(data, _TOP_KEYS, None)
    quota = max_links_per_uid
    if "max_links_per_uid" in data:
        quota = parser.number(data["max_links_per_uid"], None, "max_links_per_uid", _MAX_QUOTA)
    admins = Who(frozenset({0}), frozenset())
    if "admins" in data:
        table = data["admins"]
        if type(table) is not dict:
            raise parser.fail(
                None, "admins", "admins must be a table: {users = [...], groups = [...]}"
            )
        parser.unknown(table, _WHO_KEYS, "admins")
        named = parser.who(table, "admins")
        admins = Who(named.uids | {0}, named.gids)
    admins = Who(admins.uids, admins.gids | admin_groups_of(admin_groups, groups).gids)
    raw_rules = data.get("rule", [])
    if type(raw_rules) is not list:
        raise parser.fail(None, "rule", "rules are written as [[rule]] tables")
    rules = [iface_rule(glob) for glob in allow_iface]
    rules += [parser.rule(table, n) for n, table in enumerate(raw_rules)]
    return Rules(tuple(rules), admins, quota, source)


def load(path: str, **options: Any) -> Rules:
    """The rules of the policy file at ``path`` (see :func:`parse`)."""
    try:
        with open(path, "rb") as file:
            text = file.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyFileError(path, 1, 1, f"cannot read it: {exc}") from None
    return parse(text, path, **options)


def check(path: str, **options: Any) -> int:
    """``hycan-daemon --check-policy``: print the rules as understood (0) or the error (1)."""
    try:
        rules = load(path, **options)
    except PolicyFileError as exc:
        print(f"hycan-daemon: {exc}", file=sys.stderr)
        return 1
    print("\n".join(rules.describe()))
    return 0
