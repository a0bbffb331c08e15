"""Both clients against servers that misbehave: slow, cut off, dribbling, lying.

Each test plays one fault with a fake server (a thread, or a trio task where virtual time
makes the deadline exact) and checks the client's promise: a call that is cancelled, times
out or fails closes its connection, so no later call reads its reply; a call's timeout is
a deadline for the whole call; a reply that is not what the op answers is a
``ProtocolError``, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import hycan
from hycan import AsyncDaemonClient, DaemonClient
from hycan._protocol import Op, Request, RequestDecoder, Response, ok
from hycan._status import LinkStatus
from hycan.errors import ErrorCode, HycanError
from tests.test_cli import hycan as hycan_cli

Handler = Callable[[socket.socket, int, threading.Event], None]


def requests(conn: socket.socket) -> Iterator[Request]:
    """The requests arriving on ``conn`` until the client hangs up."""
    decoder = RequestDecoder()
    while True:
        while isinstance(event := decoder.next_event(), Request):
            yield event
        data = conn.recv(65536)
        if not data:
            return
        decoder.receive_data(data)


def status_reply(name: str) -> bytes:
    """A valid STATUS reply naming ``name``: which request a reply answers is visible."""
    return ok(LinkStatus(name, exists=False).to_json()).encode()


PING_REPLY = ok('{"protocol":1,"version":"0.1.0","backend":"fake"}').encode()


def answer(request: Request) -> bytes:
    """What a well-behaved daemon would answer (PING, or STATUS of a missing link)."""
    return PING_REPLY if request.op == Op.PING else status_reply(request.ifname)


class FakeServer:
    """A Unix server in a thread; ``handler(conn, index, stop)`` plays connection number
    ``index`` and the server hangs up when it returns. ``connections`` counts them."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self.connections = 0
        self.stop = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(path)
        self._listener.listen()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._conns: list[socket.socket] = []

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed by __exit__
                return
            index = self.connections
            self.connections += 1
            self._conns.append(conn)
            thread = threading.Thread(target=self._play, args=(conn, index), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _play(self, conn: socket.socket, index: int) -> None:
        with contextlib.suppress(OSError):
            self.handler(conn, index, self.stop)
        conn.close()

    def __enter__(self) -> FakeServer:
        self._threads[0].start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=10)
        for conn in self._conns:
            conn.close()


def fake_server(tmp_path: Path, handler: Handler) -> FakeServer:
    return FakeServer(str(tmp_path / "fake.sock"), handler)


def answer_after(delays: dict[str, float]) -> Handler:
    """Every request answered, STATUS of ``name`` ``delays[name]`` seconds late."""

    def handler(conn: socket.socket, index: int, stop: threading.Event) -> None:
        for request in requests(conn):
            if stop.wait(delays.get(request.ifname, 0.0)):
                return
            conn.sendall(answer(request))

    return handler


# --- a call that does not finish closes its connection -----------------------------------


async def test_trio_cancelled_call_closes_its_connection(tmp_path: Path) -> None:
    with fake_server(tmp_path, answer_after({"first": 0.1})) as server:
        async with AsyncDaemonClient(server.path) as client:
            with trio.move_on_after(0.05):
                await client.status("first")
            assert (await client.status("second")).name == "second"
        assert server.connections == 2


class Interrupted(BaseException):
    """What a signal handler raises in the middle of a call (like KeyboardInterrupt)."""


@contextlib.contextmanager
def interrupt_after(seconds: float) -> Iterator[None]:
    def raise_interrupted(signum: int, frame: FrameType | None) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, raise_interrupted)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_sync_interrupted_call_closes_its_connection(tmp_path: Path) -> None:
    with (
        fake_server(tmp_path, answer_after({"first": 0.5})) as server,
        DaemonClient(server.path) as client,
    ):
        with pytest.raises(Interrupted), interrupt_after(0.05):
            client.status("first")
        assert client.status("second").name == "second"
        assert server.connections == 2


def test_sync_call_waiting_for_the_connection_times_out(tmp_path: Path) -> None:
    """A call queued behind another thread's call keeps its own deadline."""
    with fake_server(tmp_path, answer_after({})) as server:
        client = DaemonClient(server.path, timeout=0.2)
        client.connect()
        outcome: list[BaseException | None] = []

        def call() -> None:
            try:
                client.ping()
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        worker = threading.Thread(target=call)
        with client._socket._lock:  # another thread's call in flight, for ever
            worker.start()
            worker.join(timeout=5)
            in_time = list(outcome)
        worker.join()
        client.close()
    assert len(in_time) == 1 and isinstance(in_time[0], hycan.Timeout)


async def test_trio_call_waiting_for_the_connection_keeps_its_deadline(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    finished: dict[str, float] = {}

    async def serve(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()  # reads nothing, answers nothing

    async def call(client: AsyncDaemonClient, label: str) -> None:
        with pytest.raises(hycan.Timeout):
            await client.ping()
        finished[label] = trio.current_time()

    async with trio.open_nursery() as nursery:
        path = await start_trio_server(nursery, tmp_path, [serve])
        async with AsyncDaemonClient(path, timeout=2) as client:
            start = trio.current_time()
            async with trio.open_nursery() as calls:
                calls.start_soon(call, client, "first")
                calls.start_soon(call, client, "queued")
        nursery.cancel_scope.cancel()
    assert finished["queued"] - start == pytest.approx(2)


# --- every call's timeout is a deadline for the whole call -------------------------------


def dribble_after(answered: int) -> Handler:
    """Connection 0 answers ``answered`` requests, then sends a header announcing 65535
    bytes and one byte a second; later connections answer normally."""

    def handler(conn: socket.socket, index: int, stop: threading.Event) -> None:
        for count, request in enumerate(requests(conn)):
            if index == 0 and count == answered:
                conn.sendall(b"\x01\x00\xff\xff")
                while not stop.wait(1.0):
                    conn.sendall(b"x")
                return
            conn.sendall(answer(request))

    return handler


@pytest.mark.parametrize("answered", [0, 1], ids=["new-connection", "open-connection"])
def test_sync_deadline_covers_a_dribbled_reply(tmp_path: Path, answered: int) -> None:
    with (
        fake_server(tmp_path, dribble_after(answered)) as server,
        DaemonClient(server.path, timeout=2) as client,
    ):
        for _ in range(answered):
            client.ping()
        start = time.monotonic()
        with pytest.raises(hycan.Timeout):
            client.ping()
        assert time.monotonic() - start < 10  # the server would take 65535 s
        assert client.ping()["backend"] == "fake"  # a new connection, a normal call
        assert server.connections == 2


def test_sync_call_after_a_slow_reply_gets_its_full_timeout(tmp_path: Path) -> None:
    """A reply whose first piece comes after 1.2 s leaves 0.8 s of a 2 s call for the rest:
    the kernel timeouts shrink for that call only, so the next call may again wait 1.2 s."""

    def handler(conn: socket.socket, index: int, stop: threading.Event) -> None:
        for count, request in enumerate(requests(conn)):
            if stop.wait(1.2):
                return
            reply = answer(request)
            if count == 0:
                conn.sendall(reply[:3])
                if stop.wait(0.1):
                    return
                reply = reply[3:]
            conn.sendall(reply)

    with fake_server(tmp_path, handler) as server, DaemonClient(server.path, timeout=2) as client:
        assert client.status("first").name == "first"
        assert client.status("second").name == "second"
        assert server.connections == 1


async def test_trio_deadline_covers_a_dribbled_reply(tmp_path: Path) -> None:
    with fake_server(tmp_path, dribble_after(0)) as server:
        async with AsyncDaemonClient(server.path, timeout=2) as client:
            start = time.monotonic()
            with pytest.raises(hycan.Timeout):
                await client.ping()
            assert time.monotonic() - start < 10


async def start_trio_server(
    nursery: trio.Nursery,
    tmp_path: Path,
    plays: list[Callable[[trio.SocketStream], Any]],
) -> str:
    """Serve connection ``i`` with ``plays[i]`` (a trio server: virtual time applies)."""
    path = str(tmp_path / "trio.sock")
    listener = trio.socket.socket(socket.AF_UNIX)
    await listener.bind(path)
    listener.listen()

    async def serve() -> None:
        with listener:
            for play in plays:
                sock, _ = await listener.accept()
                nursery.start_soon(play, trio.SocketStream(sock))
            await trio.sleep_forever()

    nursery.start_soon(serve)
    return path


async def test_trio_deadline_covers_the_transparent_reconnect(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The daemon goes away after 1.8 s of a 2 s call; the reconnect gets what is left."""

    async def serve_once_then_vanish(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(64)
            await stream.send_all(PING_REPLY)
            await stream.receive_some(64)
            await trio.sleep(1.8)

    async def never_answer(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        path = await start_trio_server(nursery, tmp_path, [serve_once_then_vanish, never_answer])
        async with AsyncDaemonClient(path, timeout=2) as client:
            await client.ping()
            start = trio.current_time()
            with pytest.raises(hycan.Timeout):
                await client.ping()
            assert trio.current_time() - start == pytest.approx(2)
        nursery.cancel_scope.cancel()


def test_sync_deadline_covers_the_transparent_reconnect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon goes away when the call's time is up: no reconnect, a Timeout."""
    skew = [0.0]
    monkeypatch.setattr("hycan._sync.transport.clock", lambda: time.monotonic() + skew[0])
    monkeypatch.setattr("hycan._sync.client.clock", lambda: time.monotonic() + skew[0])

    def handler(conn: socket.socket, index: int, stop: threading.Event) -> None:
        for _request in requests(conn):
            if index == 0:
                skew[0] += 10  # the call's 2 s went by before the daemon hung up
                return
            conn.sendall(PING_REPLY)

    with fake_server(tmp_path, handler) as server, DaemonClient(server.path, timeout=2) as client:
        with pytest.raises(hycan.Timeout):
            client.ping()
        assert server.connections == 1
        assert client.ping()["backend"] == "fake"


# --- a reply that is not what the op answers is a ProtocolError --------------------------


class ReplyServer(FakeServer):
    """Answers every request with ``self.reply`` (a message text, or raw bytes)."""

    def __init__(self, path: str) -> None:
        self.reply: str | bytes = ""
        super().__init__(path, self._answer)

    def _answer(self, conn: socket.socket, index: int, stop: threading.Event) -> None:
        for _request in requests(conn):
            reply = self.reply
            conn.sendall(reply if isinstance(reply, bytes) else ok(reply).encode())


MALFORMED_STATUS = [
    "",
    "not json",
    "[]",
    "{}",
    "null",
    '"vcan0"',
    "[" * 100_000,  # deeper than the JSON parser recurses
    '{"name":"vcan0"}',
    '{"name":"vcan0","exists":"yes"}',
    '{"name":"vcan0","exists":true,"up":"yes"}',
    '{"name":"vcan0","exists":true,"mtu":"72"}',
    '{"name":"vcan0","exists":true,"mtu":true}',
    '{"name":"vcan0","exists":true,"index":1.5}',
    '{"name":"vcan0","exists":true,"can":[]}',
    '{"name":7,"exists":true}',
    '{"name":"vcan0","exists":true,"kind":3}',
    '{"name":"vcan0","exists":true,"operstate":false}',
    '{"name":"vcan0","exists":true,"mtu":1e400}',
]
MALFORMED_PING = [
    "",
    "pong",
    "[]",
    "{}",
    "1",
    '{"protocol":1,"version":"0.1.0"}',
    '{"protocol":"1","version":"0.1.0","backend":"x"}',
    '{"protocol":true,"version":"0.1.0","backend":"x"}',
    '{"protocol":1,"version":null,"backend":"x"}',
    '{"protocol":1,"version":"0.1.0","backend":["x"]}',
    "{" * 100_000,
]


@pytest.fixture
def reply_server(tmp_path: Path) -> Iterator[ReplyServer]:
    with ReplyServer(str(tmp_path / "reply.sock")) as server:
        yield server


@pytest.mark.parametrize("text", MALFORMED_STATUS)
def test_malformed_status_is_a_protocol_error(reply_server: ReplyServer, text: str) -> None:
    reply_server.reply = text
    with DaemonClient(reply_server.path) as client, pytest.raises(hycan.ProtocolError) as info:
        client.status("vcan0")
    assert info.value.code == ErrorCode.NETLINK_CONNECT
    assert "STATUS" in info.value.message


@pytest.mark.parametrize("text", MALFORMED_PING)
async def test_malformed_ping_is_a_protocol_error(reply_server: ReplyServer, text: str) -> None:
    reply_server.reply = text
    async with AsyncDaemonClient(reply_server.path) as client:
        with pytest.raises(hycan.ProtocolError, match="PING"):
            await client.ping()


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=8,
    )


def reply_texts(keys: list[str]) -> st.SearchStrategy[str]:
    """Any text, any JSON, and objects with the op's own keys holding any JSON values."""
    objects = st.fixed_dictionaries({}, optional=dict.fromkeys(keys, json_values()))
    return st.one_of(
        st.text(),
        json_values().map(json.dumps),
        objects.map(json.dumps),
    )


def valid_status(status: LinkStatus) -> bool:
    def optional(value: object, kind: type) -> bool:
        return value is None or (isinstance(value, kind) and not isinstance(value, bool))

    return (
        isinstance(status.name, str)
        and isinstance(status.exists, bool)
        and optional(status.kind, str)
        and (status.up is None or isinstance(status.up, bool))
        and optional(status.operstate, str)
        and optional(status.mtu, int)
        and optional(status.ifindex, int)
        and optional(status.can, dict)
    )


def test_any_status_reply_is_a_status_or_a_protocol_error(reply_server: ReplyServer) -> None:
    keys = ["name", "exists", "kind", "up", "operstate", "mtu", "index", "can"]
    with DaemonClient(reply_server.path) as client:

        @settings(max_examples=300, deadline=None)
        @given(reply_texts(keys))
        def check(text: str) -> None:
            reply_server.reply = text
            try:
                status = client.status("vcan0")
            except hycan.ProtocolError:
                return
            assert valid_status(status)

        check()


def test_any_ping_reply_is_an_answer_or_a_protocol_error(reply_server: ReplyServer) -> None:
    with DaemonClient(reply_server.path) as client:

        @settings(max_examples=300, deadline=None)
        @given(reply_texts(["protocol", "version", "backend"]))
        def check(text: str) -> None:
            reply_server.reply = text
            try:
                info = client.ping()
            except hycan.ProtocolError:
                return
            assert type(info["protocol"]) is int
            assert isinstance(info["version"], str) and isinstance(info["backend"], str)

        check()


def test_two_replies_to_one_request_are_a_protocol_error(reply_server: ReplyServer) -> None:
    reply_server.reply = status_reply("vcan0") * 2
    with DaemonClient(reply_server.path) as client:
        with pytest.raises(hycan.ProtocolError, match="more than one reply"):
            client.status("vcan0")
        reply_server.reply = status_reply("vcan1")
        assert client.status("vcan1").name == "vcan1"  # a fresh connection, not the extra reply
    assert reply_server.connections == 2


async def test_trio_two_replies_to_one_request_are_a_protocol_error(
    reply_server: ReplyServer,
) -> None:
    reply_server.reply = PING_REPLY * 2
    async with AsyncDaemonClient(reply_server.path) as client:
        with pytest.raises(hycan.ProtocolError, match="more than one reply"):
            await client.ping()
        reply_server.reply = status_reply("vcan1")
        assert (await client.status("vcan1")).name == "vcan1"
    assert reply_server.connections == 2


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("ping", "pong"),
        ("ping", "[]"),
        ("ping", '{"protocol":1,"version":"0.1.0"}'),
        ("status", "[]"),
        ("status", '{"name":"vcan0","exists":true,"up":"yes"}'),
    ],
)
def test_cli_reports_a_malformed_reply(reply_server: ReplyServer, command: str, reply: str) -> None:
    reply_server.reply = reply
    args = [command] if command == "ping" else [command, "vcan0"]
    result = hycan_cli("--socket", reply_server.path, *args)
    assert result.returncode == 1
    assert result.stderr.startswith("hycan: ") and "Traceback" not in result.stderr
    data = json.loads(hycan_cli("--socket", reply_server.path, "--json", *args).stdout)
    assert data["ok"] is False and data["error"] == "ProtocolError" and data["code"] == 6


def test_cli_json_ping_keeps_its_own_keys(reply_server: ReplyServer) -> None:
    reply_server.reply = '{"protocol":1,"version":"9","backend":"x","ok":false,"command":"up"}'
    result = hycan_cli("--socket", reply_server.path, "--json", "ping")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["command"] == "ping" and data["version"] == "9"


# --- every error carries a code ----------------------------------------------------------


def all_error_classes() -> list[type[HycanError]]:
    found: list[type[HycanError]] = []
    pending: list[type[HycanError]] = [HycanError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_carries_a_code(cls: type[HycanError]) -> None:
    assert isinstance(cls("x").code, int)


def test_no_daemon_has_its_own_client_side_code(tmp_path: Path) -> None:
    with pytest.raises(hycan.DaemonUnavailable) as info:
        DaemonClient(str(tmp_path / "none.sock")).ping()
    assert info.value.code == ErrorCode.DAEMON_UNAVAILABLE == 20
    result = hycan_cli("--json", "--socket", str(tmp_path / "none.sock"), "ping")
    assert result.returncode == 3 and json.loads(result.stdout)["code"] == 20


def test_a_daemon_sending_the_client_side_code_is_just_a_failure() -> None:
    error = hycan.errors.error_for_code(20, "odd")
    assert type(error) is hycan.OperationFailed and error.code == 20


def test_a_well_formed_reply_is_returned_as_sent(reply_server: ReplyServer) -> None:
    reply_server.reply = Response(True, 0, '{"protocol":1,"version":"x","backend":"y"}').encode()
    with DaemonClient(reply_server.path) as client:
        assert client.ping() == {"protocol": 1, "version": "x", "backend": "y"}


def test_cli_prints_any_text_a_reply_carries(reply_server: ReplyServer) -> None:
    reply_server.reply = '{"name":"\\ud800","exists":false}'  # a lone surrogate
    result = hycan_cli("--socket", reply_server.path, "status", "vcan0")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert result.stdout.strip() == "\\ud800: does not exist"
