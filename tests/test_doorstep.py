"""The accept loop answers a connection's first request itself (the C++ client's pattern:
connect, one request, close) and gives the connection a task only when it needs one."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

import hycan
from hycan._handler import Handler
from hycan._protocol import Op, Response, ResponseDecoder, encode_request
from hycan.backends.memory import MemoryBackend
from hycan.daemon import server as server_module
from hycan.daemon.listener import bind_unix
from hycan.daemon.server import Limits, Server
from tests.conftest import InProcessDaemon

PING = encode_request(Op.PING, b"")


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.setblocking(False)
    return sock


async def read_replies(sock: socket.socket, count: int) -> list[Response]:
    decoder = ResponseDecoder(max_buffer=1 << 22)
    found: list[Response] = []
    with trio.fail_after(10):
        while len(found) < count:
            await trio.lowlevel.wait_readable(sock)
            data = sock.recv(1 << 16)
            assert data, f"closed after {len(found)} of {count} replies"
            decoder.receive_data(data)
            while isinstance(reply := decoder.next_event(), Response):
                found.append(reply)
    return found


async def settled() -> None:
    """Until the server has read everything the test sent (and acted on it)."""
    await trio.testing.wait_all_tasks_blocked()


def tasks(server: Server) -> int:
    """The server's client tasks (its nursery also runs the once-a-second tick)."""
    assert server._nursery is not None
    return len(server._nursery.child_tasks) - 1


async def test_a_one_call_client_gets_its_answer_and_no_task(daemon: InProcessDaemon) -> None:
    for _ in range(20):
        sock = connect(daemon.path)
        with sock:
            sock.sendall(encode_request(Op.CREATE_VCAN, b"door0"))
            (reply,) = await read_replies(sock, 1)
            assert reply.success
            await settled()
            assert tasks(daemon.server) == 0
        await settled()
        assert daemon.server.clients == 0  # its EOF was read at the door
    assert daemon.backend.status("door0").exists


async def test_a_second_request_gives_the_connection_its_task(daemon: InProcessDaemon) -> None:
    sock = connect(daemon.path)
    with sock:
        sock.sendall(PING)
        await read_replies(sock, 1)
        sock.sendall(PING)
        (reply,) = await read_replies(sock, 1)
        assert reply.success
        await settled()
        assert tasks(daemon.server) == 1
        assert daemon.server.clients == 1


async def test_a_first_request_in_pieces_is_answered(daemon: InProcessDaemon) -> None:
    frame = encode_request(Op.STATUS, b"piece0")
    sock = connect(daemon.path)
    with sock:
        for byte in frame:
            sock.sendall(bytes([byte]))
            await settled()
        (reply,) = await read_replies(sock, 1)
        assert reply.success and json.loads(reply.message)["exists"] is False


async def test_a_first_pipeline_longer_than_a_batch_is_answered_in_order(
    daemon: InProcessDaemon,
) -> None:
    names = [f"p{i}".encode() for i in range(3 * server_module._BATCH)]
    sock = connect(daemon.path)
    with sock:
        sock.sendall(b"".join(encode_request(Op.STATUS, name) for name in names))
        replies = await read_replies(sock, len(names))
    assert [r.message.split('"')[3] for r in replies] == [n.decode() for n in names]


async def test_a_first_reply_the_socket_does_not_take_is_sent_by_the_task(
    daemon: InProcessDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    def three_bytes(sock: socket.socket, data: bytes) -> int:
        return sock.send(data[:3])

    monkeypatch.setattr(server_module, "_send_now", three_bytes)
    sock = connect(daemon.path)
    with sock:
        sock.sendall(PING * 2)
        first, second = await read_replies(sock, 2)
    assert first == second and json.loads(first.message)["protocol"] == 1


@pytest.fixture
async def quick_idle(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[tuple[str, Server]]:
    server = Server(Handler(MemoryBackend()), limits=Limits(idle_timeout=10))
    bound = bind_unix(str(tmp_path / "idle.sock"))
    await nursery.start(server.serve, bound.sock)
    yield bound.path, server
    bound.remove()


async def test_a_connection_that_never_sends_is_closed_at_the_idle_timeout(
    quick_idle: tuple[str, Server], autojump_clock: trio.testing.MockClock
) -> None:
    path, server = quick_idle
    silent, dripping = connect(path), connect(path)
    with silent, dripping:
        dripping.sendall(encode_request(Op.STATUS, b"half0")[:4])
        await trio.sleep(5)
        assert server.clients == 2  # moved from the door to tasks of their own, still open
        assert tasks(server) == 2
        await trio.sleep(10)
        assert server.clients == 0
        for sock in (silent, dripping):
            assert sock.recv(16) == b""  # closed by the daemon


async def test_shutdown_closes_the_connections_at_the_door(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    server = Server(Handler(MemoryBackend()))
    bound = bind_unix(str(tmp_path / "s.sock"))
    done = trio.Event()

    async def serve() -> None:
        await server.serve(bound.sock)
        done.set()

    nursery.start_soon(serve)
    await trio.testing.wait_all_tasks_blocked()
    waiting = [connect(bound.path) for _ in range(3)]
    waiting[0].sendall(PING)
    await read_replies(waiting[0], 1)
    await settled()
    assert server.clients == 3 and tasks(server) == 0
    server.shutdown()
    with trio.fail_after(5):
        await done.wait()
    assert server.clients == 0
    for sock in waiting:
        with sock:
            assert sock.recv(64) == b""
    bound.remove()


async def test_the_sync_client_works_through_the_door(daemon: InProcessDaemon) -> None:
    def calls() -> None:
        with hycan.DaemonClient(daemon.path) as client:
            client.create("sync0")
            client.up("sync0")
            assert client.status("sync0").up

    await trio.to_thread.run_sync(calls)
