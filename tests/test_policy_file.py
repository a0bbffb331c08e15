"""The policy file and the rules engine: parsing, errors with positions, and properties
(hypothesis) of the decisions. No kernel, no real users: lookups are injected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hycan._netns import Where
from hycan._peercred import PeerCredentials
from hycan.backends.base import LinkRef
from hycan.daemon.groups import GroupDatabase
from hycan.daemon.policy import Policy, Rule, Rules, Verb, Who
from hycan.daemon.policyfile import PolicyFileError, parse

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "policy"
USERS = {"robot": 2001, "alice": 1001, "bob": 1002}
GROUPS = {"bench": 3001, "hycan-admin": 3002}
DATABASE = GroupDatabase(
    account=lambda uid: (f"u{uid}", uid),
    members=lambda gid: tuple(f"u{uid}" for uid in (1001, 1002, 2001)),  # all listed
)


def load(text: str, **options: object) -> Rules:
    return parse(text, "policy.toml", users=USERS.get, groups=GROUPS.get, **options)  # type: ignore[arg-type]


def refused(
    rules: Rules, peer: PeerCredentials, verb: Verb, link: LinkRef, where: Where = Where.HOST
) -> bool:
    return Policy(rules, DATABASE).refusal(peer, verb, link, where) is not None


peers = st.builds(
    PeerCredentials,
    st.just(1),
    st.sampled_from([0, 1001, 1002, 2001, 4242]),
    st.sampled_from([1001, 3001]),
    st.lists(st.sampled_from([3001, 3002, 5000]), max_size=2).map(tuple),
)
aliases = st.sampled_from([None, "hycan owner=1001", "hycan owner=2001 lease=1.1", "x"])
links = st.builds(
    LinkRef,
    st.integers(1, 9),
    st.sampled_from(["vcan0", "can0", "can1", "ci7", "veth0", "lo", "hyc1"]),
    st.sampled_from(["vcan", "vxcan", "can", "veth", None]),
    aliases,
)
verbs = st.sampled_from(list(Verb))
places = st.sampled_from(list(Where))


@pytest.mark.parametrize("path", sorted(DEPLOY.glob("*.toml")), ids=lambda p: p.name)
def test_every_example_file_parses(path: Path) -> None:
    rules = load(path.read_text())
    assert rules.rules and rules.describe()[-1] == "otherwise: deny"


def test_the_test_bench_example_means_what_it_says() -> None:
    rules = load((DEPLOY / "test-bench.toml").read_text())
    can0 = LinkRef(3, "can0", "can")
    bench = PeerCredentials(1, 1001, 1001, (3001,))
    robot = PeerCredentials(1, 2001, 2001, ())
    assert not refused(rules, bench, Verb.SET_CAN, can0)
    assert not refused(rules, bench, Verb.UP, can0)
    assert refused(rules, bench, Verb.DOWN, can0)
    assert not refused(rules, bench, Verb.DOWN, LinkRef(4, "can1", "can"))
    assert not refused(rules, robot, Verb.DOWN, can0)
    assert refused(rules, robot, Verb.SET_CAN, can0)  # robot is not in bench
    admin = PeerCredentials(1, 1002, 1002, (3002,))
    owned = LinkRef(5, "vcan9", "vcan", "hycan owner=1001")
    assert not refused(rules, admin, Verb.DELETE, owned)


@settings(max_examples=300, deadline=None)
@given(peers, verbs, links, places)
def test_default_file_decides_like_the_built_in_defaults(
    peer: PeerCredentials, verb: Verb, link: LinkRef, where: Where
) -> None:
    written = load((DEPLOY / "default.toml").read_text())
    assert refused(written, peer, verb, link, where) == refused(
        Rules.defaults(), peer, verb, link, where
    )


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(["can*", "veth?", "lo", "c[a-b]n1"]), max_size=3), peers, verbs, links
)
def test_allow_iface_flags_equal_their_written_rules(
    globs: list[str], peer: PeerCredentials, verb: Verb, link: LinkRef
) -> None:
    default = (DEPLOY / "default.toml").read_text()
    written = "".join(
        f'[[rule]]\nallow = ["up", "down", "set-mtu", "set-can", "restart", "route"]\n'
        f'names = ["{g}"]\n'
        for g in globs
    )
    flags = load(default, allow_iface=globs)
    # flags come before the file's rules; these rules only allow, so order is moot here
    assert refused(flags, peer, verb, link) == refused(load(default + written), peer, verb, link)
    assert refused(flags, peer, verb, link) == refused(Rules.defaults(globs), peer, verb, link)


rules_strategy = st.lists(
    st.builds(
        Rule,
        st.booleans(),
        st.frozensets(verbs, min_size=1),
        st.builds(
            Who,
            st.frozensets(st.sampled_from([0, 1001, 1002, 2001])),
            st.frozensets(st.sampled_from([3001, 3002])),
        ),
        st.lists(st.sampled_from(["*", "can*", "vcan0", "lo"]), max_size=2).map(tuple),
        st.frozensets(st.sampled_from(["vcan", "can", "veth", "none"])),
        st.none(),
        st.just("generated"),
        st.frozensets(places, min_size=1),
    ),
    max_size=5,
).map(tuple)


@settings(max_examples=500, deadline=None)
@given(rules_strategy, peers, verbs, links, places)
def test_no_rule_lifts_the_floor_or_anothers_ownership(
    rules: tuple[Rule, ...], peer: PeerCredentials, verb: Verb, link: LinkRef, where: Where
) -> None:
    policy = Policy(Rules(rules), DATABASE)
    refusal = policy.refusal(peer, verb, link, where)
    if verb in (Verb.CREATE, Verb.DELETE) and link.kind not in ("vcan", "vxcan"):
        assert refusal is not None  # hycan creates and deletes vcans and vxcans only
    owner = {"hycan owner=1001": 1001, "hycan owner=2001 lease=1.1": 2001}.get(link.alias or "")
    if where is Where.OWN:
        owner = None  # in the peer's own namespace an alias proves nothing: rules decide
    if refusal is None and owner is not None and verb is not Verb.CREATE:
        assert peer.uid in (owner, 0)  # root is the only admin here


@settings(max_examples=300, deadline=None)
@given(rules_strategy, peers, verbs, links)
def test_the_last_matching_rule_decides(
    rules: tuple[Rule, ...], peer: PeerCredentials, verb: Verb, link: LinkRef
) -> None:
    unowned = link._replace(alias=None, kind="vcan")
    last = Rule(False, frozenset({verb}))  # for everyone, any link
    assert refused(Rules((*rules, last)), peer, verb, unowned)
    assert not refused(Rules((*rules, last, Rule(True, frozenset({verb})))), peer, verb, unowned)
    # a later rule that does not match changes nothing
    other = Rule(True, frozenset({verb}), names=("no-such-link",))
    before = refused(Rules(rules), peer, verb, unowned)
    assert refused(Rules((*rules, other)), peer, verb, unowned) == before


@settings(max_examples=300, deadline=None)
@given(rules_strategy, st.booleans(), verbs, links)
def test_a_rule_for_one_uid_never_changes_another(
    rules: tuple[Rule, ...], allow: bool, verb: Verb, link: LinkRef
) -> None:
    bob = PeerCredentials(1, 1002, 1002, ())
    for_alice = Rule(allow, frozenset(Verb), Who(frozenset({1001})))
    assert refused(Rules((*rules, for_alice)), bob, verb, link) == refused(
        Rules(rules), bob, verb, link
    )


def test_quota_comes_from_the_deciding_rule_then_the_default() -> None:
    rules = load(
        'max_links_per_uid = 5\n[[rule]]\nallow = ["create"]\nkinds = ["vcan"]\n'
        '[[rule]]\nallow = ["create"]\nnames = ["ci*"]\nmax_links = 2\n'
    )
    policy = Policy(rules, DATABASE)
    alice = PeerCredentials(1, 1001, 1001, ())
    ci = policy.decide(alice, Verb.CREATE, LinkRef(0, "ci1", "vcan"))
    other = policy.decide(alice, Verb.CREATE, LinkRef(0, "bus1", "vcan"))
    assert policy.max_links(alice, ci) == 2 and policy.max_links(alice, other) == 5
    assert policy.max_links(PeerCredentials(1, 0, 0, ()), ci) is None


@pytest.mark.parametrize(
    ("text", "line", "column", "problem"),
    [
        ("colour = 1\n", 1, 1, "unknown key 'colour'"),
        ('[[rule]]\nallow = ["up"]\nnmaes = ["x"]\n', 3, 1, "unknown key 'nmaes'"),
        ('[[rule]]\nallow = ["up", "dwon"]\n', 2, 16, "unknown verb 'dwon'"),
        (
            '[[rule]]\nallow = ["up"]\nusers = ["alice", "mallory"]\n',
            3,
            19,
            "no such user: mallory",
        ),
        ('[[rule]]\nallow = ["up"]\ngroups = ["nope"]\n', 3, 11, "no such group: nope"),
        ('[[rule]]\nallow = ["up"]\nnames = ["can 0"]\n', 3, 10, "bad name glob"),
        ('[[rule]]\nallow = ["up"]\nnames = ["x", ""]\n', 3, 15, "bad name glob"),
        ('[[rule]]\nallow = ["up"]\nkinds = ["CAN"]\n', 3, 10, "bad kind"),
        (
            '[[rule]]\nallow = ["up"]\nmax_links = 3\n',
            3,
            1,
            "max_links needs a rule that allows create",
        ),
        ('[[rule]]\nallow = ["create"]\nmax_links = true\n', 3, 1, "whole number"),
        ('[[rule]]\nallow = ["up"]\ndeny = ["down"]\n', 1, 1, "exactly one of allow"),
        ("[[rule]]\nnames = ['x']\n", 1, 1, "exactly one of allow"),
        ('[[rule]]\nallow = ["up"]\nuids = [4294967295]\n', 3, 9, "uids must be a whole number"),
        ("max_links_per_uid = -1\n", 1, 1, "max_links_per_uid must be"),
        ("[[rule]]\nallow = [\n", 3, 1, "not valid TOML"),
        ('admins = { groups = ["nope"] }\n', 1, 22, "no such group: nope"),
        ('admins = { teams = ["x"] }\n', 1, 12, "unknown key 'teams'"),
        ('[[rule]]\nallow = ["up"]\n\n[[rule]]\nallow = []\n', 5, 1, "non-empty array"),
    ],
)
def test_errors_name_line_and_column(text: str, line: int, column: int, problem: str) -> None:
    with pytest.raises(PolicyFileError) as info:
        load(text)
    assert (info.value.line, info.value.column) == (line, column), str(info.value)
    assert problem in info.value.problem
    assert str(info.value).startswith(f"policy.toml:{line}:{column}: ")


def test_rule_origins_name_their_line() -> None:
    rules = load('# comment\n\n[[rule]]\nallow = ["up"]\n[[rule]]\ndeny = ["up"]\n')
    assert [r.origin for r in rules.rules] == ["policy.toml:3", "policy.toml:5"]


def test_check_policy_prints_the_rules_or_the_error(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text((DEPLOY / "ci-host.toml").read_text())
    run = [sys.executable, "-m", "hycan.daemon.main", "--check-policy"]
    shown = subprocess.run([*run, str(good)], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert "max links per uid: 16" in shown.stdout
    assert "allow everyone: create on kind vcan with name ci* or hyc*, at most 16" in shown.stdout
    assert shown.stdout.rstrip().endswith("otherwise: deny")
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nallow = ["up", "dwon"]\n')
    refused_run = subprocess.run([*run, str(bad)], capture_output=True, text=True, timeout=30)
    assert refused_run.returncode == 1
    assert f"{bad}:2:16: unknown verb 'dwon'" in refused_run.stderr


def test_admin_group_flag_adds_admins_and_must_name_a_group() -> None:
    rules = load("", admin_groups=["hycan-admin"])
    assert rules.admins == Who(frozenset({0}), frozenset({3002}))
    with pytest.raises(PolicyFileError, match="no such group: staff9"):
        load("", admin_groups=["staff9"])
