"""Owners, leases, quotas and LIST: the handler's side, on the memory backend (no kernel)."""

from __future__ import annotations

import json
import os
import struct

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import hycan
from hycan._handler import Handler, Session
from hycan._owner import Owner, holder_alive, owner_of, this_process
from hycan._peercred import PeerCredentials
from hycan._protocol import Op
from hycan.backends.memory import MemoryBackend
from hycan.daemon.groups import GroupDatabase
from hycan.daemon.policy import Policy, Rules, Who
from hycan.errors import ErrorCode
from tests.conftest import InProcessDaemon
from tests.handling import ALICE, BOB, ROOT, handle

LEASE = json.dumps({"kind": "vcan", "lease": True}).encode()
MTU16 = struct.pack("<I", 16)


def handler(*, max_links: int = 32, admins: Who | None = None, **kw: object) -> Handler:
    database = GroupDatabase(account=lambda uid: (f"user{uid}", uid), members=lambda gid: ())
    rules = Rules.defaults(admins=admins, max_links_per_uid=max_links)
    return Handler(MemoryBackend(), policy=Policy(rules, database), lease_holder="1.1")


def sessions() -> tuple[Session, Session]:
    return Session(ALICE), Session(BOB)


# --- the alias format -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "owner"),
    [
        ("hycan owner=1001", Owner(1001)),
        ("hycan owner=0", Owner(0)),
        ("hycan owner=7 lease=42.123", Owner(7, "42.123")),
        ("hycan owner=4294967294", Owner(4294967294)),
        ("hycan owner=4294967295", None),  # (uid_t)-1 is nobody
        ("hycan owner=01", None),  # one spelling per uid
        ("hycan owner=1 ", None),
        (" hycan owner=1", None),
        ("hycan owner=1 lease=0.1", None),
        ("hycan owner=1\nlease=1.1", None),
        ("front bus", None),
        (None, None),
    ],
)
def test_alias_format_is_strict(alias: str | None, owner: Owner | None) -> None:
    assert owner_of(alias) == owner
    if owner is not None:
        assert owner.alias() == alias


def test_lease_holder_token_names_a_live_process_exactly() -> None:
    token = this_process()
    assert holder_alive(token)
    pid, start = token.split(".")
    assert not holder_alive(f"{pid}.{int(start) + 1}")  # same pid, another process
    assert not holder_alive("999999999.1")
    assert not holder_alive("garbage")


# --- owners ---------------------------------------------------------------------------


def test_creator_owns_the_vcan_and_others_may_not_change_it() -> None:
    h = handler()
    alice, bob = sessions()
    assert handle(h, Op.CREATE_VCAN, "vcan7", session=alice)[2] == "vcan7 created"
    assert h.backend.status("vcan7").alias == "hycan owner=1001"
    status = json.loads(handle(h, Op.STATUS, "vcan7", session=bob)[2])
    assert (status["owner"], status["lease"]) == (1001, False)
    for op, payload in (
        (Op.INTERFACE_UP, b""),
        (Op.INTERFACE_DOWN, b""),
        (Op.SET_MTU, MTU16),
        (Op.DELETE, b""),
    ):
        ok, code, message = handle(h, op, "vcan7", payload, session=bob)
        assert (ok, code) == (False, ErrorCode.PERMISSION_DENIED), op
        assert "vcan7 belongs to uid 1001 (user1001)" in message
    assert h.backend.status("vcan7").mtu == 72  # untouched
    assert handle(h, Op.INTERFACE_UP, "vcan7", session=alice)[0]
    assert handle(h, Op.INTERFACE_DOWN, "vcan7", session=alice)[0]
    assert handle(h, Op.SET_MTU, "vcan7", MTU16, session=alice)[0]
    assert handle(h, Op.DELETE, "vcan7", session=alice)[0]


def test_recreating_anothers_vcan_is_a_no_op_that_names_its_owner() -> None:
    h = handler()
    alice, bob = sessions()
    handle(h, Op.CREATE_VCAN, "vcan7", session=alice)
    ok, _, message = handle(h, Op.CREATE_VCAN, "vcan7", session=bob)
    assert ok and message == "vcan7 already exists (vcan, owned by uid 1001 (user1001))"
    assert h.backend.status("vcan7").alias == "hycan owner=1001"  # still alice's


def test_root_and_admins_may_change_any_owned_link() -> None:
    h = handler(admins=Who(frozenset({0}), frozenset({4000})))
    carol = Session(PeerCredentials(5, 1003, 1003, (4000,)))
    # carol's kernel groups hold 4000, but the group database must list her too
    assert handle(h, Op.CREATE_VCAN, "vcan7", session=Session(ALICE))[0]
    assert handle(h, Op.INTERFACE_UP, "vcan7", session=carol)[1] == ErrorCode.PERMISSION_DENIED
    database = GroupDatabase(account=lambda uid: (f"u{uid}", uid), members=lambda gid: ("u1003",))
    h.policy = Policy(h.policy.rules, database)
    assert handle(h, Op.INTERFACE_UP, "vcan7", session=carol)[0]
    assert handle(h, Op.INTERFACE_DOWN, "vcan7", session=Session(ROOT))[0]
    assert handle(h, Op.DELETE, "vcan7", session=Session(ROOT))[0]


def test_links_nobody_owns_follow_the_rules_alone() -> None:
    h = handler()
    h.backend.add_link("vcan0", "vcan")  # made at boot by an admin: no alias
    bob = Session(BOB)
    assert handle(h, Op.INTERFACE_UP, "vcan0", session=bob)[0]
    assert handle(h, Op.INTERFACE_DOWN, "vcan0", session=bob)[0]
    assert handle(h, Op.SET_MTU, "vcan0", MTU16, session=bob)[0]
    ok, code, message = handle(h, Op.DELETE, "vcan0", session=bob)
    assert (ok, code) == (False, ErrorCode.PERMISSION_DENIED)
    assert "vcan0 is a vcan link nobody owns" in message
    assert handle(h, Op.DELETE, "vcan0", session=Session(ROOT))[1] == ErrorCode.PERMISSION_DENIED
    assert h.backend.status("vcan0").exists


def test_an_alias_an_admin_wrote_by_hand_is_not_an_owner() -> None:
    h = handler()
    h.backend.add_link("vcan0", "vcan")
    h.backend.set_alias(h.backend.resolve("vcan0"), "hycan owner=1001 extra")
    assert handle(h, Op.INTERFACE_UP, "vcan0", session=Session(BOB))[0]


def test_an_owner_that_cannot_be_recorded_leaves_no_link(monkeypatch: pytest.MonkeyPatch) -> None:
    h = handler()

    def fail(link: object, alias: str) -> None:
        raise OSError(105, "No buffer space available")

    monkeypatch.setattr(h.backend, "set_alias", fail)
    ok, _, message = handle(h, Op.CREATE_VCAN, "vcan7")
    assert not ok and "No buffer space" in message
    assert not h.backend.status("vcan7").exists


# --- leases ---------------------------------------------------------------------------


def test_a_leased_vcan_goes_when_its_session_ends() -> None:
    h = handler()
    alice, bob = sessions()
    ok, _, message = handle(h, Op.CREATE_LINK, "vcan7", LEASE, session=alice)
    assert ok and "leased" in message
    assert h.backend.status("vcan7").alias == "hycan owner=1001 lease=1.1"
    assert json.loads(handle(h, Op.STATUS, "vcan7")[2])["lease"] is True
    handle(h, Op.CREATE_LINK, "vcan8", LEASE, session=alice)
    handle(h, Op.CREATE_VCAN, "keep0", session=alice)
    assert h.release(bob) == []
    assert sorted(h.release(alice)) == [("vcan7", None), ("vcan8", None)]
    assert not h.backend.status("vcan7").exists and not h.backend.status("vcan8").exists
    assert h.backend.status("keep0").exists
    assert h.release(alice) == []  # released once


def test_a_leased_link_deleted_early_is_not_released_again() -> None:
    h = handler()
    alice = Session(ALICE)
    handle(h, Op.CREATE_LINK, "vcan7", LEASE, session=alice)
    assert handle(h, Op.DELETE, "vcan7", session=alice)[0]
    assert alice.leases == {}


def test_a_leased_link_someone_else_deleted_releases_quietly() -> None:
    h = handler()
    alice = Session(ALICE)
    handle(h, Op.CREATE_LINK, "vcan7", LEASE, session=alice)
    handle(h, Op.DELETE, "vcan7", session=Session(ROOT))
    assert h.release(alice) == [("vcan7", None)]


def test_a_lease_must_be_for_a_new_link() -> None:
    h = handler()
    alice, bob = sessions()
    handle(h, Op.CREATE_VCAN, "vcan7", session=alice)
    for session in (alice, bob):
        ok, code, message = handle(h, Op.CREATE_LINK, "vcan7", LEASE, session=session)
        assert (ok, code) == (False, ErrorCode.ALREADY_EXISTS)
        assert "a leased link must be new" in message
    assert h.release(alice) == [] and h.backend.status("vcan7").exists
    # asking again on the connection that holds the lease is a no-op
    handle(h, Op.CREATE_LINK, "vcan8", LEASE, session=alice)
    ok, _, message = handle(h, Op.CREATE_LINK, "vcan8", LEASE, session=alice)
    assert ok and message == "vcan8 already exists (vcan, leased by this connection)"


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"[]", "not a JSON object"),
        (b"{", "not a JSON object"),
        (b'{"lease": 1}', '"lease" must be true or false'),
        (b'{"up": "yes"}', '"up" must be true or false'),
        (b'{"kind": "vxcan"}', 'a vxcan needs "peer"'),
        (b'{"kind": "vcan", "peer": "x0"}', "only a vxcan has one"),
        (b'{"kind": "vxcan", "peer": 7}', '"peer" must be a link name'),
        (b'{"kind": 5}', '"kind" must be a string'),
        (b'{"lease": true, "netns": 3}', 'unknown key "netns"'),
        (b"[" * 100000, "nested too deeply"),
    ],
)
def test_create_link_payload_is_validated(payload: bytes, problem: str) -> None:
    h = handler()
    ok, code, message = handle(h, Op.CREATE_LINK, "vcan7", payload)
    assert (ok, code) == (False, ErrorCode.INVALID_ARGUMENT)
    assert problem in message
    assert not h.backend.status("vcan7").exists


def test_only_vcans_are_created_whatever_the_payload_says() -> None:
    h = handler()
    bridge = b'{"kind": "bridge"}'
    ok, code, message = handle(h, Op.CREATE_LINK, "br0", bridge, session=Session(ROOT))
    assert (ok, code) == (False, ErrorCode.PERMISSION_DENIED)
    assert "hycan creates only vcan and vxcan links" in message
    assert not h.backend.status("br0").exists


def test_a_restarted_daemon_deletes_the_leases_of_the_one_that_died() -> None:
    backend = MemoryBackend()
    for name, alias in (
        ("dead0", "hycan owner=1001 lease=999999999.5"),  # its daemon is gone
        ("live0", f"hycan owner=1001 lease={this_process()}"),  # another live daemon's
        ("mine0", "hycan owner=1001 lease=1.1"),  # this daemon's own token
        ("kept0", "hycan owner=1001"),  # owned, not leased
        ("boot0", None),
    ):
        backend.add_link(name, "vcan")
        if alias:
            backend.set_alias(backend.resolve(name), alias)
    h = Handler(backend, lease_holder="1.1")
    assert h.release_orphans() == [("dead0", None)]
    assert [s.name for s in backend.links() if s.kind == "vcan"] == [
        "live0",
        "mine0",
        "kept0",
        "boot0",
    ]


# --- quotas ---------------------------------------------------------------------------


def test_a_uid_owns_at_most_its_quota() -> None:
    h = handler(max_links=2)
    alice, bob = sessions()
    assert handle(h, Op.CREATE_VCAN, "a0", session=alice)[0]
    assert handle(h, Op.CREATE_LINK, "a1", LEASE, session=alice)[0]
    ok, code, message = handle(h, Op.CREATE_VCAN, "a2", session=alice)
    assert (ok, code) == (False, ErrorCode.BUSY)
    assert "already owns 2 links and may own at most 2" in message
    assert not h.backend.status("a2").exists
    assert handle(h, Op.CREATE_VCAN, "b0", session=bob)[0]  # a quota per uid
    assert handle(h, Op.CREATE_VCAN, "a0", session=alice)[0]  # an existing one: no-op
    for n in range(5):
        assert handle(h, Op.CREATE_VCAN, f"r{n}", session=Session(ROOT))[0]  # root: none
    h.release(alice)  # the lease a1 ends
    assert handle(h, Op.CREATE_VCAN, "a2", session=alice)[0]


def test_links_deleted_behind_the_daemons_back_are_counted_again() -> None:
    h = handler(max_links=1)
    handle(h, Op.CREATE_VCAN, "a0")
    h.backend.delete_link(h.backend.resolve("a0"))  # `ip link del a0` by root
    assert handle(h, Op.CREATE_VCAN, "a1")[0]


# --- LIST -----------------------------------------------------------------------------


def listing(h: Handler, session: Session, after: int = 0) -> dict[str, object]:
    payload = json.dumps({"after": after}).encode()
    ok, _, message = handle(h, Op.LIST, "", payload, session=session)
    assert ok, message
    result: dict[str, object] = json.loads(message)
    return result


def test_list_shows_what_the_caller_may_act_on() -> None:
    h = handler()
    alice, bob = sessions()
    handle(h, Op.CREATE_VCAN, "mine0", session=alice)
    handle(h, Op.CREATE_LINK, "lease0", LEASE, session=alice)
    h.backend.add_link("boot0", "vcan")
    seen = {e["name"]: e for e in listing(h, alice)["links"]}  # type: ignore[attr-defined]
    assert set(seen) == {"mine0", "lease0", "boot0"}  # not lo, eth0
    assert seen["mine0"]["owner"] == 1001 and seen["mine0"]["owner_name"] == "user1001"
    assert seen["lease0"]["lease"] is True and seen["mine0"]["lease"] is False
    mine = ["up", "down", "delete", "set-mtu", "set-can", "restart", "route"]
    assert seen["mine0"]["may"] == mine
    assert seen["boot0"]["may"] == ["up", "down", "set-mtu", "route"]
    assert seen["boot0"]["owner"] is None
    bobs = {e["name"] for e in listing(h, bob)["links"]}  # type: ignore[attr-defined]
    assert bobs == {"boot0"}
    roots = {e["name"] for e in listing(h, Session(ROOT))["links"]}  # type: ignore[attr-defined]
    assert roots == {"lo", "eth0", "mine0", "lease0", "boot0"}


def test_list_pages_fit_in_a_reply() -> None:
    h = handler(max_links=10_000)
    alice = Session(ALICE)
    for n in range(1200):
        assert handle(h, Op.CREATE_VCAN, f"v{n}", session=alice)[0]
    names: list[str] = []
    after, pages = 0, 0
    while True:
        payload = json.dumps({"after": after}).encode()
        ok, _, message = handle(h, Op.LIST, "", payload, session=alice)
        assert ok and len(message.encode()) < 65535
        page = json.loads(message)
        names += [e["name"] for e in page["links"]]
        pages += 1
        if page["next"] is None:
            break
        after = page["next"]
    assert pages > 1 and names == [f"v{n}" for n in range(1200)]


@pytest.mark.parametrize("payload", [b'{"after": -1}', b'{"after": "1"}', b'{"x": 1}', b"[]"])
def test_list_payload_is_validated(payload: bytes) -> None:
    assert handle(handler(), Op.LIST, "", payload)[1] == ErrorCode.INVALID_ARGUMENT


# --- through the daemon: the connection owns its leases -------------------------------


async def test_leases_end_with_the_connection(daemon: InProcessDaemon) -> None:
    backend = daemon.backend
    async with hycan.AsyncDaemonClient(daemon.path) as client:
        await client.create_vcan("lease0", lease=True)
        await client.create_vcan("keep0")
        assert client.leases == ("lease0",)
        entries = {e.name: e for e in await client.list_links()}
        assert entries["lease0"].lease and not entries["keep0"].lease
        assert entries["lease0"].owner == os.geteuid()
        assert backend.status("lease0").exists
    # the server ends the session once it sees the EOF
    with trio.fail_after(5):
        while backend.status("lease0").exists:
            await trio.testing.wait_all_tasks_blocked()
    assert backend.status("keep0").exists


async def test_a_connection_holding_leases_outlives_the_idle_timeout(
    tmp_path: object, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    from hycan.daemon.listener import bind_unix
    from hycan.daemon.server import Limits, Server

    backend = MemoryBackend()
    server = Server(Handler(backend), limits=Limits(idle_timeout=10))
    path = f"{tmp_path}/idle.sock"
    bound = bind_unix(path)
    await nursery.start(server.serve, bound.sock)
    try:
        leased = hycan.AsyncDaemonClient(path, fallback=False)
        plain = hycan.AsyncDaemonClient(path, fallback=False)
        await leased.create_vcan("lease0", lease=True)
        await plain.ping()
        await trio.sleep(60)  # the mock clock: six idle timeouts pass at once
        assert server.clients == 1  # the plain connection was closed, the leased one not
        assert backend.status("lease0").exists
        await leased.ping()
        await leased.aclose()
        await plain.aclose()
    finally:
        bound.remove()


async def test_a_lost_connection_with_leases_is_not_replaced_silently(
    daemon: InProcessDaemon,
) -> None:
    client = hycan.AsyncDaemonClient(daemon.path)
    await client.create_vcan("lease0", lease=True)
    server = daemon.server
    await trio.testing.wait_all_tasks_blocked()  # its task has started (and waits)
    assert server._connections
    for connection in list(server._connections):
        connection.scope.cancel()  # as a daemon restart would end it
    with trio.fail_after(5):
        while daemon.backend.status("lease0").exists:
            await trio.testing.wait_all_tasks_blocked()
    with pytest.raises(hycan.LeaseLost, match="leased lease0 closed"):
        await client.ping()
    await client.ping()  # told once; the client then goes on with a new connection
    await client.aclose()


async def test_a_cpp_clients_create_records_its_uid_as_owner(daemon: InProcessDaemon) -> None:
    """Op 1 as the C++ client sends it (connect, one frame, read, close): byte-for-byte
    the same exchange as before, and the vcan is owned by the client's uid, not leased."""
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.connect(daemon.path)
    await sock.send(b"\x01\x05vcan5")
    reply = b""
    while len(reply) < 4 or len(reply) < 4 + int.from_bytes(reply[2:4], "little"):
        reply += await sock.recv(100)
    sock.close()
    assert reply == b"\x01\x00\x0d\x00vcan5 created"
    with trio.fail_after(5):  # the session ends after the close: nothing leased to delete
        while daemon.server.clients:
            await trio.testing.wait_all_tasks_blocked()
    assert daemon.backend.status("vcan5").alias == f"hycan owner={os.geteuid()}"


async def test_netlink_objects_lease_too(daemon: InProcessDaemon) -> None:
    net = await hycan.AsyncNetlink.open("net0", lease=True, socket_path=daemon.path)
    assert (await net.status()).lease is True
    with pytest.raises(hycan.AlreadyExists, match="a leased link must be new"):
        await hycan.AsyncNetlink.open("net0", lease=True, socket_path=daemon.path)
    await net.aclose()
    with trio.fail_after(5):
        while daemon.backend.status("net0").exists:
            await trio.testing.wait_all_tasks_blocked()


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([Op.CREATE_LINK, Op.LIST]),
    st.one_of(
        st.binary(max_size=64),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=6), inner, max_size=3)
            ),
            max_leaves=10,
        ).map(lambda v: json.dumps(v).encode()[:4096]),
        st.just(b"[" * 4096),
        st.just(b'{"kind": "vcan", "lease": true, "kind": "veth"}'),
        st.just(LEASE),
    ),
)
def test_hostile_create_link_and_list_payloads_leave_the_handler_serving(
    op: Op, payload: bytes
) -> None:
    h = handler()
    bob = Session(BOB)
    ok, code, message = handle(h, op, "" if op is Op.LIST else "vcan7", payload, session=bob)
    assert code in (0, ErrorCode.INVALID_ARGUMENT, ErrorCode.PERMISSION_DENIED), message
    # whatever happened, it made at most one vcan, owned by bob, and the handler goes on
    links = [s for s in h.backend.links() if s.kind == "vcan"]
    assert len(links) == (1 if ok and op is Op.CREATE_LINK else 0)
    assert all(s.alias is not None and s.alias.startswith(f"hycan owner={BOB.uid}") for s in links)
    assert handle(h, Op.PING, "", session=bob)[0]
    leased = len(bob.leases)
    assert h.release(bob) == [("vcan7", None)] * leased
    assert not any("lease=" in (s.alias or "") for s in h.backend.links())
