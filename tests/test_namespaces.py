"""Network namespaces, vxcan pairs and CAN gateway routes: the handler's side, on the memory
backend (no kernel). The kernel's side is in test_namespaces_netns.py and tests/vm."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hycan import AsyncDaemonClient
from hycan._handler import MAX_NAMESPACES, Handler, Session
from hycan._netns import Netns, NotANetns, Where
from hycan._peercred import PeerCredentials
from hycan._protocol import Op
from hycan.backends.memory import MemoryBackend
from hycan.daemon.groups import GroupDatabase
from hycan.daemon.policy import ALL_VERBS, Policy, Rule, Rules
from hycan.errors import ErrorCode
from tests.conftest import InProcessDaemon
from tests.handling import ALICE, BOB, ROOT, handle


class Namespaces:
    """Stand-ins for namespace files: ``own-UID-N`` / ``other-N`` files whose name says
    what the fake classifier reports (the real one asks the kernel: tests of their own)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def open(self, label: str) -> int:
        path = self.root / label
        path.touch()
        return os.open(path, os.O_RDONLY)

    def classify(self, fd: int, uid: int) -> Netns:
        label = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        inode = os.fstat(fd).st_ino
        if label.startswith("own-"):
            owner = int(label.split("-")[1])
            return Netns(fd, inode, Where.OWN if owner == uid else Where.OTHER, owner)
        if label.startswith("other-"):
            return Netns(fd, inode, Where.OTHER, None)
        raise NotANetns("the file passed is not a namespace (a test file)")


@pytest.fixture
def spaces(tmp_path: Path) -> Namespaces:
    return Namespaces(tmp_path)


def make_handler(spaces: Namespaces, *rules: Rule, max_links: int = 32) -> Handler:
    database = GroupDatabase(account=lambda uid: (f"user{uid}", uid), members=lambda gid: ())
    base = Rules.defaults(("can*",), max_links_per_uid=max_links)
    policy = Policy(Rules(base.rules + rules, base.admins, max_links), database)
    return Handler(
        MemoryBackend(), policy=policy, lease_holder="1.1", classify_netns=spaces.classify
    )


def enter(handler: Handler, session: Session, fd: int | None) -> tuple[bool, int, str]:
    """NETNS with ``fd`` received on the connection, as the server hands it over."""
    if fd is not None:
        session.receive_fd(fd)
    return handle(handler, Op.NETNS, "", session=session)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def create(kind: str = "vcan", **options: object) -> bytes:
    return json.dumps({"kind": kind, **options}).encode()


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    before = open_fds()
    yield
    assert open_fds() <= before | {str(n) for n in range(3)}


def test_a_member_creates_a_vcan_in_its_own_namespace_and_the_host_never_sees_it(
    spaces: Namespaces, no_fd_leak: None
) -> None:
    h = make_handler(spaces)
    alice = Session(ALICE)
    ok, _, message = enter(h, alice, spaces.open("own-1001-a"))
    assert ok and json.loads(message)["netns"] == "own"
    ok, _, message = handle(h, Op.CREATE_LINK, "vcan0", create(up=True), session=alice)
    assert ok, message
    assert not h.backend.status("vcan0").exists  # the daemon's namespace has none
    ok, _, status = handle(h, Op.STATUS, "vcan0", session=alice)
    assert ok and json.loads(status)["up"] is True
    names = [e["name"] for e in json.loads(handle(h, Op.LIST, "", session=alice)[2])["links"]]
    assert names == ["lo", "vcan0"]  # everything in its own namespace is its to see
    assert handle(h, Op.DELETE, "vcan0", session=alice)[0]
    assert enter(h, alice, None)[0]  # back in the daemon's namespace
    assert handle(h, Op.STATUS, "vcan0", session=alice)[2].count('"exists":false') == 1
    h.release(alice)


def test_another_users_namespace_is_refused_and_leaves_nothing_open(
    spaces: Namespaces, no_fd_leak: None
) -> None:
    h = make_handler(spaces)
    bob = Session(BOB)
    ok, code, message = enter(h, bob, spaces.open("own-1001-a"))
    assert (ok, code) == (False, ErrorCode.PERMISSION_DENIED)
    assert "user namespace was made by uid 1001 (user1001)" in message
    assert bob.places == {} and bob.place is None and bob.pending_fd is None
    # the refused connection still acts in the daemon's namespace
    assert handle(h, Op.CREATE_VCAN, "vcan1", session=bob)[0]
    assert h.backend.status("vcan1").exists


def test_a_namespace_of_the_initial_user_namespace_needs_a_rule(
    spaces: Namespaces, no_fd_leak: None
) -> None:
    ok, code, message = enter(make_handler(spaces), Session(ALICE), spaces.open("other-x"))
    assert (ok, code) == (False, ErrorCode.PERMISSION_DENIED)
    assert "initial user namespace" in message and 'netns = ["other"]' in message
    admitted = make_handler(
        spaces, Rule(True, ALL_VERBS, netns=frozenset({Where.OTHER}), origin="test")
    )
    alice = Session(ALICE)
    assert enter(admitted, alice, spaces.open("other-x"))[0]
    # hycan cannot record an owner there: a member's vcan must be leased
    ok, code, message = handle(admitted, Op.CREATE_LINK, "vc0", create(), session=alice)
    assert (ok, code) == (False, ErrorCode.INVALID_ARGUMENT) and "must be leased" in message
    ok, _, message = handle(admitted, Op.CREATE_LINK, "vc0", create(lease=True), session=alice)
    assert ok, message
    # another member admitted there cannot delete it: the daemon remembers whose it is
    bob = Session(BOB)
    assert enter(admitted, bob, spaces.open("other-x"))[0]
    ok, code, message = handle(admitted, Op.DELETE, "vc0", session=bob)
    assert (ok, code) == (False, ErrorCode.PERMISSION_DENIED) and "user1001" in message
    admitted.release(bob)
    assert [name for name, problem in admitted.release(alice)] == ["vc0"]


def test_changes_in_another_namespace_are_not_supported_but_create_up_is(
    spaces: Namespaces, no_fd_leak: None
) -> None:
    h = make_handler(spaces)
    alice = Session(ALICE)
    enter(h, alice, spaces.open("own-1001-a"))
    handle(h, Op.CREATE_LINK, "vcan0", create(), session=alice)
    for op in (Op.INTERFACE_UP, Op.INTERFACE_DOWN):
        ok, code, message = handle(h, op, "vcan0", session=alice)
        assert (ok, code) == (False, ErrorCode.NOT_SUPPORTED)
        assert "create it already up" in message and "ip link set vcan0" in message
    h.release(alice)


def test_not_a_namespace_is_refused(spaces: Namespaces, no_fd_leak: None) -> None:
    h = make_handler(spaces)
    ok, code, message = enter(h, Session(ALICE), spaces.open("notes.txt"))
    assert (ok, code) == (False, ErrorCode.INVALID_ARGUMENT)
    assert "not a namespace" in message


def test_a_connection_enters_a_bounded_number_of_namespaces(
    spaces: Namespaces, no_fd_leak: None
) -> None:
    h = make_handler(spaces)
    alice = Session(ALICE)
    for n in range(MAX_NAMESPACES):
        assert enter(h, alice, spaces.open(f"own-1001-{n}"))[0]
    assert enter(h, alice, spaces.open("own-1001-0"))[0]  # one already entered is fine
    ok, code, message = enter(h, alice, spaces.open("own-1001-new"))
    assert (ok, code) == (False, ErrorCode.BUSY) and "another connection" in message
    h.release(alice)


def test_a_vxcan_pair_has_its_peer_on_the_host_owned_and_leased(
    spaces: Namespaces, no_fd_leak: None
) -> None:
    h = make_handler(spaces)
    alice = Session(ALICE)
    enter(h, alice, spaces.open("own-1001-a"))
    payload = create("vxcan", peer="vxh0", lease=True, up=True)
    ok, _, message = handle(h, Op.CREATE_LINK, "vc0", payload, session=alice)
    assert ok and message.startswith("vc0 and its peer vxh0 created (up) (leased")
    peer = h.backend.status("vxh0")
    assert peer.kind == "vxcan" and peer.alias == "hycan owner=1001 lease=1.1"
    # the peer is Alice's on the host: Bob may not touch it
    ok, code, _ = handle(h, Op.INTERFACE_DOWN, "vxh0", session=Session(BOB))
    assert (ok, code) == (False, ErrorCode.PERMISSION_DENIED)
    h.release(alice)
    assert not h.backend.status("vxh0").exists


def test_a_vxcan_peer_name_is_judged_as_a_host_create(spaces: Namespaces, no_fd_leak: None) -> None:
    h = make_handler(spaces)
    alice = Session(ALICE)
    enter(h, alice, spaces.open("own-1001-a"))
    ok, code, message = handle(
        h, Op.CREATE_LINK, "vc0", create("vxcan", peer="eth0"), session=alice
    )
    assert (ok, code) == (False, ErrorCode.ALREADY_EXISTS) and "pick another peer" in message
    h.release(alice)
    assert h.backend.status("eth0").kind is None  # untouched


def test_routes_join_a_members_vxcan_to_allowed_host_links_only(spaces: Namespaces) -> None:
    h = make_handler(spaces)
    backend = h.backend
    assert isinstance(backend, MemoryBackend)
    backend.add_link("hub0", "vcan")  # an admin's shared vcan, nobody's
    backend.add_link("hub1", "vcan")
    backend.plug_can_adapter("can0")
    alice = Session(ALICE)
    handle(h, Op.CREATE_LINK, "vxa", create("vxcan", peer="vxb"), session=alice)

    def route(src: str, dst: str, session: Session, **options: object) -> tuple[bool, int, str]:
        payload = json.dumps({"action": "add", "dst": dst, **options}).encode()
        return handle(h, Op.ROUTE, src, payload, session=session)

    ok, _, message = route("vxb", "hub0", alice, both=True, lease=True)
    assert (
        ok and message == "route vxb <-> hub0 added (leased: deleted when this connection closes)"
    )
    assert route("vxb", "can0", alice, can_id=0x123)[0]
    assert len(backend.routes()) == 3
    assert backend.routes()[2].mask == 0x800007FF  # exactly that standard ID
    # refused: a link the policy does not allow, and two links neither of which is hers
    for src, dst in (("vxb", "eth0"), ("hub0", "hub1"), ("hub0", "can0")):
        ok, code, message = route(src, dst, alice)
        assert (ok, code) == (False, ErrorCode.PERMISSION_DENIED), (src, dst, message)
    assert len(backend.routes()) == 3  # each refusal left nothing behind
    # Bob neither sees nor deletes Alice's routes
    bob = Session(BOB)
    assert json.loads(handle(h, Op.ROUTES, "", session=bob)[2]) == {"routes": []}
    payload = json.dumps({"action": "del", "dst": "can0", "can_id": 0x123}).encode()
    ok, code, _ = handle(h, Op.ROUTE, "vxb", payload, session=bob)
    assert (ok, code) == (False, ErrorCode.PERMISSION_DENIED)
    shown = json.loads(handle(h, Op.ROUTES, "", session=alice)[2])["routes"]
    assert [(r["src"], r["dst"], r["lease"]) for r in shown] == [
        ("vxb", "hub0", True),
        ("hub0", "vxb", True),
        ("vxb", "can0", False),
    ]
    assert len(json.loads(handle(h, Op.ROUTES, "", session=Session(ROOT))[2])["routes"]) == 3
    # the connection's end takes its leased routes; deleting the vxcan takes the rest
    h.release(alice)
    assert [(r.src, r.dst) for r in backend.routes()] == [
        (backend.resolve("vxb").ifindex, backend.resolve("can0").ifindex)
    ]
    assert handle(h, Op.DELETE, "vxa", session=Session(ALICE))[0]
    assert backend.routes() == [] and not backend.status("vxb").exists


def test_deleting_a_route_needs_the_same_filter(spaces: Namespaces) -> None:
    h = make_handler(spaces)
    alice = Session(ALICE)
    handle(h, Op.CREATE_LINK, "vxa", create("vxcan", peer="vxb"), session=alice)
    h.backend.add_link("hub0", "vcan")
    add = json.dumps({"action": "add", "dst": "hub0", "can_id": 7}).encode()
    assert handle(h, Op.ROUTE, "vxa", add, session=alice)[0]
    wrong = json.dumps({"action": "del", "dst": "hub0"}).encode()
    ok, code, message = handle(h, Op.ROUTE, "vxa", wrong, session=alice)
    assert not ok and "no such route" in message, (code, message)
    right = json.dumps({"action": "del", "dst": "hub0", "can_id": 7}).encode()
    assert handle(h, Op.ROUTE, "vxa", right, session=alice) == (
        True,
        0,
        "route vxa -> hub0 deleted",
    )


def test_the_quota_counts_vxcan_peers_but_not_links_in_ones_own_namespace(
    spaces: Namespaces, no_fd_leak: None
) -> None:
    h = make_handler(spaces, max_links=2)
    alice = Session(ALICE)
    enter(h, alice, spaces.open("own-1001-a"))
    for n in range(5):  # the member could make these itself: no quota
        assert handle(h, Op.CREATE_LINK, f"v{n}", create(), session=alice)[0]
    assert handle(h, Op.CREATE_LINK, "x0", create("vxcan", peer="xh0"), session=alice)[0]
    assert handle(h, Op.CREATE_LINK, "x1", create("vxcan", peer="xh1"), session=alice)[0]
    ok, code, message = handle(h, Op.CREATE_LINK, "x2", create("vxcan", peer="xh2"), session=alice)
    assert (ok, code) == (False, ErrorCode.BUSY), message
    h.release(alice)


route_payloads = st.one_of(
    st.binary(max_size=64),
    st.dictionaries(
        st.sampled_from(["action", "dst", "both", "can_id", "mask", "fd", "lease", "x"]),
        st.one_of(
            st.sampled_from(["add", "del", "hub0", "eth0", "vxb", "", "a" * 20]),
            st.integers(-1, 2**33),
            st.booleans(),
            st.none(),
        ),
    ).map(lambda d: json.dumps(d).encode()),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=route_payloads, who=st.sampled_from([ALICE, BOB]))
def test_hostile_route_payloads_route_only_what_the_policy_allows(
    spaces: Namespaces, payload: bytes, who: PeerCredentials
) -> None:
    h = make_handler(spaces)
    backend = h.backend
    assert isinstance(backend, MemoryBackend)
    backend.add_link("hub0", "vcan")
    handle(h, Op.CREATE_LINK, "vxa", create("vxcan", peer="vxb"), session=Session(ALICE))
    ok, _, _ = handle(h, Op.ROUTE, "vxb", payload, session=Session(who))
    names = {s.ifindex: s.name for s in backend.links()}
    for route in backend.routes():
        assert who is ALICE  # only the owner of vxb routes anything
        assert {names[route.src], names[route.dst]} == {"vxb", "hub0"}
    if not ok:
        assert backend.routes() == []


def test_route_messages_have_the_bytes_of_linux_can_gw_h() -> None:
    from hycan.backends import _cangw
    from hycan.backends.base import Route

    encoded = _cangw.encode(24, Route(3, 4, 0x123, 0x800007FF, fd=True), seq=7)
    header = struct.pack("=IHHII", len(encoded), 24, 0x1 | 0x4 | 0x400, 7, 0)  # REQUEST|ACK|CREATE
    body = struct.pack("=BBH", 29, 1, 0x01 | 0x08)  # AF_CAN, CGW_TYPE_CAN_CAN, ECHO|FD
    attrs = struct.pack("=HHI", 8, 9, 3) + struct.pack("=HHI", 8, 10, 4)  # SRC_IF, DST_IF
    attrs += struct.pack("=HHII", 12, 11, 0x123, 0x800007FF)  # CGW_FILTER
    assert encoded == header + body + attrs
    dump = _cangw.encode(26, None, seq=8)
    assert struct.unpack_from("=HH", dump, 4) == (26, 0x1 | 0x300)  # REQUEST|DUMP
    # what the kernel dumps back decodes to the same job, counters included
    reply = bytearray(encoded) + struct.pack("=HHI", 8, 7, 5) + struct.pack("=HHI", 8, 8, 1)
    struct.pack_into("=I", reply, 0, len(reply))
    assert _cangw.decode(bytes(reply)) == Route(3, 4, 0x123, 0x800007FF, True, True, 5, 1)
    with pytest.raises(ValueError, match="both interfaces"):
        _cangw.encode(25, Route(0, 0), seq=1)  # the kernel reads that as "flush every job"


def test_a_sandbox_runs_its_command_as_the_caller_in_a_new_network_namespace(
    tmp_path: Path,
) -> None:
    from hycan._sandbox import Sandbox

    out = tmp_path / "seen"
    script = f"readlink /proc/self/ns/net > {out}; id -u >> {out}; cat /proc/self/uid_map >> {out}"
    sandbox = Sandbox(["sh", "-c", script], dict(os.environ))
    assert out.exists() is False  # held before exec until released
    inside = os.readlink(sandbox.netns)
    sandbox.release()
    assert sandbox.wait() == 0
    netns, uid, mapping = out.read_text().splitlines()
    assert netns == inside != os.readlink("/proc/self/ns/net")
    assert int(uid) == os.getuid() and mapping.split() == [str(os.getuid())] * 2 + ["1"]
    abandoned = Sandbox(["sh", "-c", f"touch {tmp_path / 'ran'}"], dict(os.environ))
    abandoned.abandon()
    assert not (tmp_path / "ran").exists() and abandoned.returncode != 0


@pytest.fixture
def own_sandbox() -> Iterator[str]:
    """A namespace of this test's own: ``unshare`` as this uid (a real nsfs file)."""
    import subprocess
    import time

    proc = subprocess.Popen(["unshare", "--user", "--net", "--map-current-user", "sleep", "60"])
    path = f"/proc/{proc.pid}/ns/net"
    deadline = time.monotonic() + 10
    while os.readlink(path) == os.readlink("/proc/self/ns/net"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    yield path
    proc.kill()
    proc.wait()


async def test_the_trio_client_passes_namespaces_over_the_socket(
    daemon: InProcessDaemon, own_sandbox: str
) -> None:
    """Descriptors cross the real socket and server (the memory backend plays the kernel)."""
    async with AsyncDaemonClient(daemon.path) as client:
        assert await client.create_vcan("vc0", netns=own_sandbox, up=True) == "vc0 created (up)"
        names = [entry.name for entry in await client.list_links(netns=own_sandbox)]
        assert names == ["lo", "vc0"]
        assert not (await client.status("vc0")).exists  # back in the daemon's namespace
        await client.create_vxcan("vx0", peer="vxh0", netns=own_sandbox, lease=True)
        await client.create_vcan("hub0")
        await client.add_route("vxh0", "hub0", both=True, lease=True)
        assert [(r.src, r.dst) for r in await client.routes()] == [
            ("vxh0", "hub0"),
            ("hub0", "vxh0"),
        ]
        fd = os.open(own_sandbox, os.O_RDONLY)  # a descriptor works as well as a path
        try:
            assert (await client.status("vx0", netns=fd)).up is True
        finally:
            os.close(fd)
    with trio.fail_after(5):  # the server ends the session once it sees the EOF
        while daemon.backend.status("vxh0").exists:
            await trio.testing.wait_all_tasks_blocked()
    assert daemon.backend.routes() == []


def test_a_vxcan_end_in_another_namespace_counts_once_through_its_peer(
    spaces: Namespaces, no_fd_leak: None
) -> None:
    h = make_handler(
        spaces, Rule(True, ALL_VERBS, netns=frozenset({Where.OTHER}), origin="test"), max_links=2
    )
    alice = Session(ALICE)
    assert enter(h, alice, spaces.open("other-x"))[0]
    for n in range(2):  # each pair is one link of hers: the peer on the host
        payload = create("vxcan", peer=f"xh{n}", lease=True)
        ok, _, message = handle(h, Op.CREATE_LINK, f"x{n}", payload, session=alice)
        assert ok, message
    ok, code, _ = handle(
        h, Op.CREATE_LINK, "x2", create("vxcan", peer="xh2", lease=True), session=alice
    )
    assert (ok, code) == (False, ErrorCode.BUSY)
    h.release(alice)
