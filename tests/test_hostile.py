"""Hostile clients against the daemon: nothing a client sends, or how it connects, waits and
closes, may stop the daemon, write its log, or cost another client its service (issue 13).

Each test is a finding that was reproduced against the daemon before it was fixed.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import select
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hycan
from hycan import AsyncDaemonClient, DaemonClient
from hycan._handler import Answer, Handler, Session
from hycan._protocol import Op, Request, Response, ResponseDecoder, encode_request
from hycan.backends.memory import MemoryBackend
from hycan.daemon import server as server_module
from hycan.daemon.audit import AuditLog, audit_logger
from hycan.daemon.listener import bind_unix
from hycan.daemon.server import Server
from hycan.errors import ErrorCode
from tests.audit_grammar import parse_log
from tests.conftest import DaemonProcess, daemon_command
from tests.identities import Identities, Identity, run_as
from tests.strategies import FRAMES


def connect(path: str, timeout: float = 10) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(timeout)
    sock.connect(path)
    return sock


def replies(sock: socket.socket, count: int) -> list[Response]:
    """Read ``count`` responses (fewer if the daemon closes first)."""
    decoder = ResponseDecoder()
    got: list[Response] = []
    while len(got) < count:
        data = sock.recv(65536)
        if not data:
            break
        decoder.receive_data(data)
        while isinstance(event := decoder.next_event(), Response):
            got.append(event)
    return got


def exchange(path: str, frame: bytes) -> Response:
    with connect(path) as sock:
        sock.sendall(frame)
        [reply] = replies(sock, 1)
    return reply


def alive(proc: DaemonProcess) -> bool:
    assert proc.proc is not None
    with DaemonClient(proc.path) as client:
        served = client.ping()["protocol"] == 1
    return served and proc.proc.poll() is None


# -- 1: one request must never end the daemon ---------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b'{"\\ud800": 1}',  # a lone surrogate: the "unknown keys" message could not be encoded
        b'{"\\udfff\\n\\u001b[31m": true}',
        b'{"bitrate": "\\ud800"}',
    ],
)
def test_set_can_with_unencodable_text_is_refused_and_the_daemon_lives(
    daemon_process: DaemonProcess, payload: bytes
) -> None:
    with DaemonClient(daemon_process.path) as client:
        client.create("vcan0")
    reply = exchange(daemon_process.path, encode_request(Op.SET_CAN, b"vcan0", payload))
    assert (reply.success, reply.code) == (False, ErrorCode.INVALID_ARGUMENT)
    assert alive(daemon_process)


def test_deeply_nested_set_can_payload_is_an_invalid_argument_not_an_internal_error(
    daemon_process: DaemonProcess,
) -> None:
    with DaemonClient(daemon_process.path) as client:
        client.create("vcan0")
    reply = exchange(daemon_process.path, encode_request(Op.SET_CAN, b"vcan0", b"[" * 4096))
    assert (reply.success, reply.code) == (False, ErrorCode.INVALID_ARGUMENT)
    assert "nested" in reply.message
    assert alive(daemon_process)
    _, log = daemon_process.stop()
    assert "Traceback" not in log and "traceback=" not in log


class _Faulty(Handler):
    """A handler with a bug: any request for the link ``boom`` raises."""

    def answer(self, request: Request, session: Session) -> Answer:
        if request.name == b"boom":
            raise RuntimeError("injected fault")
        return super().answer(request, session)


@pytest.fixture
async def faulty_daemon(tmp_path: Path, nursery: trio.Nursery) -> Iterator[str]:
    path = str(tmp_path / "faulty.sock")
    bound = bind_unix(path)
    await nursery.start(Server(_Faulty(MemoryBackend())).serve, bound.sock)
    yield path
    bound.remove()


async def test_an_unexpected_exception_closes_only_that_connection(
    faulty_daemon: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hycan")
    async with AsyncDaemonClient(faulty_daemon) as bystander:
        assert (await bystander.ping())["protocol"] == 1
        victim = await trio.open_unix_socket(faulty_daemon)
        async with victim:
            # The faulty request and one behind it, pipelined.
            await victim.send_all(
                encode_request(Op.STATUS, b"boom") + encode_request(Op.STATUS, b"lo")
            )
            decoder = ResponseDecoder()
            got: list[Response] = []
            with trio.fail_after(10):
                while data := await victim.receive_some(4096):
                    decoder.receive_data(data)
                    while isinstance(event := decoder.next_event(), Response):
                        got.append(event)
        # It is answered "internal error", then its connection is closed (EOF above).
        assert [(r.success, r.code) for r in got] == [(False, ErrorCode.INTERNAL)]
        assert (await bystander.status("lo")).exists  # the other client is untouched
    async with AsyncDaemonClient(faulty_daemon) as newcomer:  # and new clients are served
        assert (await newcomer.ping())["protocol"] == 1
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1
    assert "injected fault" in caplog.text


async def test_a_fault_while_admitting_a_client_does_not_stop_the_server(
    faulty_daemon: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = server_module.peer_credentials
    calls = 0

    def flaky(sock: socket.socket) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("injected admission fault")
        return real(sock)

    monkeypatch.setattr(server_module, "peer_credentials", flaky)
    first = await trio.open_unix_socket(faulty_daemon)
    async with first:
        with trio.fail_after(10):
            assert await first.receive_some(4096) == b""  # closed, nothing else
    async with AsyncDaemonClient(faulty_daemon) as client:
        assert (await client.ping())["protocol"] == 1
    assert "injected admission fault" in caplog.text


class _Slow(Handler):
    """Link changes that take the kernel 3 ms each (a slow USB CAN adapter, say)."""

    def answer(self, request: Request, session: Session) -> Answer:
        if request.name == b"slow":
            time.sleep(0.003)  # stands for the kernel's time, not synchronisation
        return super().answer(request, session)


async def test_a_pipeline_of_slow_changes_does_not_hold_up_another_client(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    path = str(tmp_path / "slow.sock")
    log = io.StringIO()
    audit_logger.setLevel(logging.DEBUG)
    bound = bind_unix(path)
    server = Server(_Slow(MemoryBackend()), audit=AuditLog(log, throttle=None))
    await nursery.start(server.serve, bound.sock)
    try:
        pipeliner = await trio.open_unix_socket(path)
        await pipeliner.send_all(encode_request(Op.STATUS, b"slow") * 64)
        await pipeliner.receive_some(4096)  # its first answers are out: it is being served
        async with AsyncDaemonClient(path) as other:
            await other.ping()
        await pipeliner.aclose()
    finally:
        audit_logger.setLevel(logging.NOTSET)
        bound.remove()
    ops = [line.split(" op=", 1)[1].split(" ", 1)[0] for line in log.getvalue().splitlines()]
    # The PING was answered after a few of the 64 slow requests, not after all of them.
    assert ops.index("PING") < 16, ops


# -- 5: idle means "no complete request", partial frames or not ---------------------------


def test_slowloris_dripping_a_partial_frame_is_closed_after_the_idle_timeout(
    tmp_path: Path,
) -> None:
    proc = DaemonProcess(
        str(tmp_path / "d.sock"), "--backend", "memory", "--idle-timeout", "1"
    ).start()
    try:
        with connect(proc.path) as sock:
            sock.setblocking(False)
            # A SET_MTU frame announcing a 4096-byte payload, one byte at a time.
            frame = encode_request(Op.SET_MTU, b"vcan0", b"\0" * 4096)[:-1]
            started = time.monotonic()
            closed_after = None
            for byte in frame:
                try:
                    if sock.recv(1) == b"":
                        closed_after = time.monotonic() - started
                        break
                except BlockingIOError:
                    pass
                try:
                    sock.send(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    closed_after = time.monotonic() - started
                    break
                time.sleep(0.3)  # the attacker's pace, not synchronisation
                if time.monotonic() - started > 15:
                    break
        # Closed within timeout + 1 s (with slack for a loaded machine), not kept forever.
        assert closed_after is not None, "the dripping connection was never closed"
        assert closed_after < 6
    finally:
        proc.stop()


# -- 6: the log grows by a bounded amount whatever a client sends -------------------------


def test_a_flood_of_bad_frames_is_summarized_not_logged_line_by_line(tmp_path: Path) -> None:
    proc = DaemonProcess(str(tmp_path / "d.sock"), "--backend", "memory").start()
    try:
        frames = encode_request(Op.STATUS, b"/") * 20_000  # 3 bytes each, invalid name
        with connect(proc.path, timeout=60) as sock:
            sock.sendall(frames)
            got = replies(sock, 20_000)
        assert len(got) == 20_000 and all(r.code == ErrorCode.INVALID_NAME for r in got)
        assert alive(proc)
    finally:
        _, log = proc.stop()
    assert len(log.encode()) <= 5 * len(frames), f"log grew {len(log)} bytes"
    summaries = [line for line in log.splitlines() if "event=suppressed" in line]
    assert summaries, "the suppressed failures are not summarized"
    counted = sum(int(_field(line, "count")) for line in summaries)
    logged = sum(1 for line in log.splitlines() if "event=request" in line)
    assert counted + logged == 20_000


def test_a_flood_of_successful_requests_is_summarized_per_link(tmp_path: Path) -> None:
    proc = DaemonProcess(str(tmp_path / "d.sock"), "--backend", "memory").start()
    try:
        with DaemonClient(proc.path) as client:
            client.create("vcan0")
        frames = encode_request(Op.INTERFACE_UP, b"vcan0") * 20_000  # 7 bytes each, all "ok"
        with connect(proc.path, timeout=60) as sock:
            sock.sendall(frames)
            got = replies(sock, 20_000)
        assert len(got) == 20_000 and all(r.success for r in got)
    finally:
        _, log = proc.stop()
    assert len(log.encode()) <= 5 * len(frames), f"log grew {len(log)} bytes"
    lines = log.splitlines()
    logged = sum("event=request" in line and "op=INTERFACE_UP" in line for line in lines)
    folded = [line for line in lines if "event=suppressed" in line and "op=INTERFACE_UP" in line]
    assert folded and all("name=vcan0" in line and "result=ok" in line for line in folded)
    assert logged + sum(int(_field(line, "count")) for line in folded) == 20_000  # none lost


def _field(line: str, key: str) -> str:
    return line.split(f" {key}=", 1)[1].split(" ", 1)[0]


# -- 3, 4: slots only for those admitted; one member cannot starve another ----------------


def _pings(path: str, count: int) -> int:
    answered = 0
    for _ in range(count):
        try:
            with DaemonClient(path, timeout=5) as client:
                answered += client.ping()["protocol"] == 1
        except hycan.HycanError:
            pass
    return answered


def _hold(path: str, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        try:
            held.append(connect(path))
        except OSError:
            break
    return held


@pytest.fixture
def open_daemon(
    tmp_path: Path, shared_dir: Path, identities: Identities
) -> Iterator[DaemonProcess]:
    """A memory daemon admitting group members, whose socket file is world-connectable, so
    the daemon's own checks (not file permissions) face the outsider."""
    proc = DaemonProcess(
        str(shared_dir / "open.sock"),
        "--backend",
        "memory",
        "--group",
        identities.group,
        "--max-clients",
        "64",
    ).start()
    os.chmod(proc.path, 0o666)
    yield proc
    proc.stop()


class _Attacker:
    """The forked attacker's side of two pipes: report readiness, learn when to stop."""

    def __init__(self, ready: int, stop: int) -> None:
        self._ready, self._stop = ready, stop

    def ready(self, value: int = 0) -> None:
        os.write(self._ready, bytes([min(value, 255)]))

    def stopping(self) -> bool:
        return bool(select.select([self._stop], [], [], 0)[0])

    def wait(self) -> None:
        os.read(self._stop, 1)


@contextlib.contextmanager
def attack_as(who: Identity, attack: Callable[[_Attacker], None]) -> Iterator[int]:
    """Run ``attack`` as ``who`` in a forked child; yields the value it reported as ready,
    and stops it (then reaps it) when the block ends."""
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups(list(who.groups))
            os.setresgid(*[who.gid] * 3)
            os.setresuid(*[who.uid] * 3)
            attack(_Attacker(ready_w, stop_r))
        finally:
            os._exit(0)
    try:
        reported = os.read(ready_r, 1)
        assert reported, "the attacker died before it was ready"
        yield reported[0]
    finally:
        os.write(stop_w, b"x")
        os.waitpid(pid, 0)
        for fd in (ready_r, ready_w, stop_r, stop_w):
            os.close(fd)


def test_refused_peers_hold_no_slot(open_daemon: DaemonProcess, identities: Identities) -> None:
    def flood(attacker: _Attacker) -> None:  # ~600 refused connections held in rotation
        ring: list[socket.socket] = []
        made = 0
        while not attacker.stopping():
            with contextlib.suppress(OSError):
                ring.append(connect(open_daemon.path, timeout=1))
                made += 1
            if len(ring) > 600:
                ring.pop(0).close()
            if made % 60 == 0:
                time.sleep(0.1)  # ~600 connections a second: each one stays open ~1 s
            if made == 600:
                attacker.ready()

    with attack_as(identities.outsider, flood):
        answered = run_as(identities.member, lambda: _pings(open_daemon.path, 30))
    assert answered == 30
    _, log = open_daemon.stop()
    assert f"event=connect uid={identities.outsider.uid}" in log


def test_a_member_holding_connections_cannot_starve_another_member(
    open_daemon: DaemonProcess, identities: Identities
) -> None:
    def hog(attacker: _Attacker) -> None:  # 200 connections, held until told to stop
        held = _hold(open_daemon.path, 200)
        busy = 0
        for sock in held:  # each gets one answer: its PING's, or "busy" before it asked
            with contextlib.suppress(BrokenPipeError):
                sock.sendall(encode_request(Op.PING, b""))
            [reply] = replies(sock, 1)
            if reply.code == ErrorCode.BUSY and "16 connections per uid" in reply.message:
                busy += 1
        attacker.ready(busy)
        attacker.wait()

    with attack_as(identities.member, hog) as busy:
        answered = run_as(identities.member2, lambda: _pings(open_daemon.path, 10))
    assert busy == 200 - 16, "the over-cap connections were not answered 'busy' naming the cap"
    assert answered == 10


# -- 7: SIGTERM with --user ---------------------------------------------------------------


def test_sigterm_with_user_exits_zero_and_removes_the_socket(
    shared_dir: Path, identities: Identities
) -> None:
    shared_dir.chmod(0o1777)  # like /tmp, the default place of a hand-started daemon
    proc = DaemonProcess(
        str(shared_dir / "user.sock"), "--backend", "memory", "--user", identities.service.name
    ).start()
    status, log = proc.stop()
    assert status == 0, log
    assert not os.path.exists(proc.path)


@pytest.mark.parametrize("case", ["user in root's 0755", "root in a user's 0755", "closed parent"])
def test_a_daemon_that_could_not_remove_its_socket_is_refused_at_start(
    shared_dir: Path, identities: Identities, case: str
) -> None:
    where, user = shared_dir, ("--user", identities.service.name)
    if case == "root in a user's 0755":  # root keeps no CAP_DAC_OVERRIDE once restricted
        os.chown(shared_dir, identities.member.uid, identities.member.gid)
        user = ()
    elif case == "closed parent":  # the directory is writable, one above it is not
        where = shared_dir / "inner"
        where.mkdir(mode=0o1777)
        where.chmod(0o1777)
        shared_dir.chmod(0o700)
    with pytest.raises(RuntimeError, match="could not remove"):
        DaemonProcess(str(where / "user.sock"), "--backend", "memory", *user).start()
    assert not os.path.exists(where / "user.sock")  # the refusal leaves nothing behind
    assert not [p.name for p in where.iterdir() if "probe" in p.name]
    if where != shared_dir:
        where.rmdir()


# -- hypothesis: hostile frames from many clients at once -----------------------------------


async def _send_all_and_count(path: str, clients: list[list[bytes]]) -> list[int]:
    answered = [0] * len(clients)

    async def client(i: int, frames: list[bytes]) -> None:
        stream = await trio.open_unix_socket(path)
        async with stream:
            await stream.send_all(b"".join(frames))  # pipelined, as a hostile client would
            decoder = ResponseDecoder()
            while answered[i] < len(frames):
                data = await stream.receive_some(65536)
                if not data:
                    return
                decoder.receive_data(data)
                while isinstance(decoder.next_event(), Response):
                    answered[i] += 1

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i, frames in enumerate(clients):
                nursery.start_soon(client, i, frames)
    return answered


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(clients=st.lists(st.lists(FRAMES, min_size=1, max_size=8), min_size=1, max_size=6))
def test_hostile_frames_from_many_clients_never_stop_the_live_daemon(
    daemon_process: DaemonProcess, clients: list[list[bytes]]
) -> None:
    answered = trio.run(_send_all_and_count, daemon_process.path, clients)
    assert answered == [len(frames) for frames in clients]  # every frame answered, in full
    assert alive(daemon_process)
    parse_log(daemon_process.log())  # and every line the daemon wrote follows the grammar


# -- the log's storage is full or gone ------------------------------------------------------


def test_a_log_that_cannot_be_written_never_ends_the_daemon(tmp_path: Path) -> None:
    path = str(tmp_path / "full.sock")
    with open("/dev/full", "wb") as full:  # every write fails with ENOSPC
        proc = subprocess.Popen(
            daemon_command("--socket", path, "--backend", "memory"),
            stdout=subprocess.PIPE,
            stderr=full,
            text=True,
        )
    try:
        assert proc.stdout is not None and "serving on" in proc.stdout.readline()
        with DaemonClient(path) as client:
            client.create("vcan0")  # logged (fails)...
            client.up("vcan0")  # ...and the next request on the connection is answered
            for _ in range(50):  # failures past the budget: a summary at the next tick
                with contextlib.suppress(hycan.InterfaceNotFound):
                    client.up("missing0")
        time.sleep(2.5)  # two ticks of the summary timer (what used to end the daemon)
        with DaemonClient(path) as client:
            assert client.ping()["protocol"] == 1
        assert proc.poll() is None
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


# -- uids the group database does not list as members --------------------------------------


def _ping_outcome(path: str) -> str:
    """ "served", or the message of the daemon's refusal."""
    try:
        with DaemonClient(path) as client:
            client.ping()
    except hycan.PermissionDenied as exc:
        return exc.message
    return "served"


def test_uids_without_an_account_do_not_multiply_the_per_uid_cap(
    open_daemon: DaemonProcess, identities: Identities
) -> None:
    # A member's user namespace maps subordinate uids (200000+) that keep the member's
    # supplementary group: the kernel admits them to the 0660 socket, each with its own uid.
    ghosts = [Identity(f"subuid{n}", 200_000 + n, 200_000 + n, (identities.gid,)) for n in range(3)]

    ping = functools.partial(_ping_outcome, open_daemon.path)
    for ghost in ghosts:
        assert "has no account here" in run_as(ghost, ping)
    assert run_as(identities.member, ping) == "served"


def test_a_member_removed_from_the_group_is_refused_at_once(
    open_daemon: DaemonProcess, identities: Identities
) -> None:
    ping = functools.partial(_ping_outcome, open_daemon.path)
    assert run_as(identities.member, ping) == "served"
    subprocess.run(["gpasswd", "-d", identities.member.name, identities.group], check=True)
    # Its session still holds the gid (run_as keeps the old groups), the database does not.
    assert "no longer lists" in run_as(identities.member, ping)
