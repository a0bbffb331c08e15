"""Authorization and interface policy as pure logic, and through the memory backend."""

from __future__ import annotations

import os

import pytest

from hycan._handler import Handler
from hycan._peercred import PeerCredentials
from hycan._protocol import Op
from hycan.backends.base import LinkRef
from hycan.backends.memory import MemoryBackend
from hycan.daemon.groups import GroupDatabase
from hycan.daemon.policy import AccessPolicy, Policy, Verb
from hycan.errors import ErrorCode
from tests.handling import ALICE, answer, handle, iface_policy

# uid 2000 ("ann", primary group 4000) is listed in group 500; uid 2001 has no account.
ACCOUNTS = {2000: ("ann", 4000)}
DATABASE = GroupDatabase(
    account=ACCOUNTS.get,
    members=lambda gid: ("ann",) if gid == 500 else (),
    version=lambda: (),
)
POLICY = AccessPolicy(
    uids=frozenset({0, 1000}), gids=frozenset({500}), group_names=("hycan",), database=DATABASE
)


def peer(uid: int, gid: int = 4000, groups: tuple[int, ...] = ()) -> PeerCredentials:
    return PeerCredentials(pid=1234, uid=uid, gid=gid, groups=groups)


@pytest.mark.parametrize(
    ("who", "admitted"),
    [
        (peer(0), True),
        (peer(1000), True),  # --allow-uid
        (peer(2000, groups=(7, 500)), True),  # supplementary member of the group
        (peer(2000, gid=500), True),  # primary group
        (peer(2000, groups=(7,)), False),
        (peer(2000, gid=1000), False),  # a gid equal to an allowed uid means nothing
    ],
)
def test_access_policy(who: PeerCredentials, admitted: bool) -> None:
    refusal = POLICY.authorize(who)
    assert (refusal is None) is admitted
    if refusal:
        assert "uid 2000" in refusal and "hycan group" in refusal


def test_holding_the_group_is_not_enough_the_database_must_list_the_member() -> None:
    ghost = peer(2001, groups=(500,))  # e.g. a subordinate uid of a member's user namespace
    assert "uid 2001 has no account here" in (POLICY.authorize(ghost) or "")
    lister = {"members": ("ann",)}
    database = GroupDatabase(
        account={2000: ("ann", 4000)}.get,
        members=lambda gid: lister["members"],
        version=lambda: (len(lister["members"]),),  # stands for /etc/group's mtime
    )
    policy = AccessPolicy(frozenset({0}), frozenset({500}), ("hycan",), database)
    assert policy.authorize(peer(2000, groups=(500,))) is None
    lister["members"] = ()  # gpasswd -d ann hycan: the session keeps the gid, the file not
    assert "no longer lists it" in (policy.authorize(peer(2000, groups=(500,))) or "")


def test_build_always_admits_root_and_self_and_ignores_missing_group() -> None:
    policy = AccessPolicy.build(allow_uids=[4242], group="no-such-group-hycan")
    assert policy.uids == {0, os.geteuid(), 4242}
    assert policy.gids == frozenset()


def status(name: str, kind: str | None) -> LinkRef:
    return LinkRef(ifindex=7, name=name, kind=kind)


@pytest.mark.parametrize(
    ("globs", "link", "allowed"),
    [
        ((), status("vcan0", "vcan"), True),
        ((), status("can0", "can"), False),
        (("can*",), status("can0", "can"), True),
        (("can*",), status("vcan9", "vcan"), True),
        (("can*",), status("eth0", None), False),
        (("can[0-1]",), status("can2", "can"), False),
    ],
)
def test_interface_policy(globs: tuple[str, ...], link: LinkRef, allowed: bool) -> None:
    refusal = iface_policy(*globs).refusal(ALICE, Verb.UP, link)
    assert (refusal is None) is allowed
    if refusal:
        assert link.name in refusal and "allowed:" in refusal


@pytest.mark.parametrize(
    ("globs", "name", "allowed"),
    [
        ((), "veth0", False),
        (("veth*",), "veth0", True),
        (("veth*",), "xveth0", False),  # globs match the whole name
        (("veth*",), "VETH0", False),  # and are case-sensitive
        (("can[0-1]", "eth?"), "can1", True),
        (("can[0-1]", "eth?"), "eth1", True),
        (("can[0-1]", "eth?"), "eth10", False),
        (("a.b",), "axb", False),  # '.' is literal, not a regex
    ],
)
def test_name_allowed_by_globs(globs: tuple[str, ...], name: str, allowed: bool) -> None:
    link = LinkRef(9, name, "veth")
    assert (iface_policy(*globs).refusal(ALICE, Verb.UP, link) is None) is allowed


def test_handler_applies_policy_and_leaves_links_untouched() -> None:
    backend = MemoryBackend()
    handler = Handler(backend, policy=iface_policy(*("eth*",)))
    assert handle(handler, Op.CREATE_VCAN, "vcan0")[0]
    assert handle(handler, Op.INTERFACE_UP, "vcan0")[0]
    assert handle(handler, Op.INTERFACE_DOWN, "eth0")[0]  # allow-listed
    ok, code, message = handle(handler, Op.INTERFACE_DOWN, "lo")
    assert (ok, code) == (False, ErrorCode.PERMISSION_DENIED)
    assert "refusing to bring down lo" in message
    assert backend.status("lo").up is True
    ok, code, _ = handle(handler, Op.DELETE, "eth0")
    assert (ok, code) == (False, ErrorCode.PERMISSION_DENIED)
    assert backend.status("eth0").exists
    assert handle(handler, Op.INTERFACE_UP, "missing0")[1] == ErrorCode.INTERFACE_NOT_FOUND
    # allow-listed by name, but missing: "not found", as the kernel says
    assert handle(handler, Op.INTERFACE_UP, "eth9")[1] == ErrorCode.INTERFACE_NOT_FOUND


def test_policy_judges_the_link_an_altname_names_not_the_altname() -> None:
    backend = MemoryBackend()
    backend.add_link("wire0", "veth")  # not allow-listed...
    backend.add_altname("wire0", "veth-okalt")  # ...but given a name that matches the glob
    backend.add_link("veth-ok1", "veth")  # allow-listed...
    backend.add_altname("veth-ok1", "other0")  # ...and called by a name that does not match
    handler = Handler(backend, policy=iface_policy(*("veth-ok*",)))
    for op, payload in ((Op.INTERFACE_UP, b""), (Op.SET_MTU, (1400).to_bytes(4, "little"))):
        refused = answer(handler, op, "veth-okalt", payload)
        assert refused.response.code == ErrorCode.PERMISSION_DENIED
        assert "wire0 is a veth link" in refused.response.message
        assert refused.link == "wire0"  # the audit line names the link acted on
    assert (backend.status("wire0").up, backend.status("wire0").mtu) == (False, 1500)
    allowed = answer(handler, Op.INTERFACE_UP, "other0")
    assert allowed == (allowed.response._replace(success=True), "veth-ok1")
    assert allowed.response.message == "veth-ok1 is up"
    assert backend.status("veth-ok1").up
    # DELETE, whatever name it is given, judges the link itself (a veth: never deleted)
    assert answer(handler, Op.DELETE, "veth-okalt").response.code == 10


def test_in_process_policy_toggles_any_link() -> None:
    backend = MemoryBackend()
    handler = Handler(backend, policy=Policy.unrestricted(ALICE.uid))
    assert handle(handler, Op.INTERFACE_DOWN, "lo")[0]
    assert backend.status("lo").up is False
