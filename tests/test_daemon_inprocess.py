"""The daemon served in the test's own trio loop (memory backend), driven by real clients."""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path

import pytest
import trio

import hycan
from hycan import AsyncDaemonClient, AsyncNetlink, DaemonClient, Netlink
from hycan._protocol import Op, Response, ResponseDecoder, encode_request
from hycan.errors import ErrorCode
from tests.conftest import InProcessDaemon


async def raw_exchange(path: str, data: bytes, expect: int) -> list[Response]:
    """Send raw bytes, read ``expect`` responses."""
    stream = await trio.open_unix_socket(path)
    async with stream:
        with contextlib.suppress(trio.BrokenResourceError):  # a refusal closes at once
            await stream.send_all(data)
        decoder = ResponseDecoder()
        got: list[Response] = []
        with trio.fail_after(5):
            while len(got) < expect:
                decoder.receive_data(await stream.receive_some(4096))
                while isinstance(event := decoder.next_event(), Response):
                    got.append(event)
    return got


async def test_every_op_through_the_trio_client(daemon: InProcessDaemon) -> None:
    async with AsyncDaemonClient(daemon.path) as client:
        assert (await client.ping())["protocol"] == 1
        assert await client.create("vcan0") == "vcan0 created"
        assert await client.create("vcan0") == "vcan0 already exists (vcan)"
        await client.up("vcan0")
        status = await client.status("vcan0")
        assert (status.exists, status.kind, status.up, status.mtu) == (True, "vcan", True, 72)
        await client.down("vcan0")
        assert (await client.status("vcan0")).up is False
        await client.delete("vcan0")
        assert (await client.status("vcan0")).exists is False
    assert "vcan0" not in daemon.backend._links


async def test_async_netlink_handle(daemon: InProcessDaemon) -> None:
    async with await AsyncNetlink.open("vcan1", socket_path=daemon.path) as net:
        await net.up()
        assert (await net.status()).up
        await net.down()
        await net.delete()
    # create=False does not create: a real link such as eth0 is driven as it is
    async with await AsyncNetlink.open("eth0", create=False, socket_path=daemon.path) as eth:
        await eth.down()
    assert daemon.backend.status("eth0").up is False


@pytest.mark.parametrize(
    ("call", "error", "code"),
    [
        (lambda c: c.up("missing0"), hycan.InterfaceNotFound, ErrorCode.INTERFACE_NOT_FOUND),
        (lambda c: c.delete("missing0"), hycan.InterfaceNotFound, ErrorCode.INTERFACE_NOT_FOUND),
        (lambda c: c.create("eth0"), hycan.AlreadyExists, ErrorCode.ALREADY_EXISTS),
        (lambda c: c.delete("eth0"), hycan.PermissionDenied, ErrorCode.PERMISSION_DENIED),
        (lambda c: c.create("x" * 16), hycan.InvalidName, ErrorCode.INVALID_NAME),
    ],
)
async def test_errors_carry_code_and_message(
    daemon: InProcessDaemon, call: object, error: type[hycan.HycanError], code: ErrorCode
) -> None:
    async with AsyncDaemonClient(daemon.path) as client:
        with pytest.raises(error) as info:
            await call(client)  # type: ignore[operator]
    assert info.value.code == code
    assert info.value.message


async def test_vcan_module_missing_message(daemon: InProcessDaemon) -> None:
    daemon.backend.vcan_available = False
    async with AsyncDaemonClient(daemon.path) as client:
        with pytest.raises(hycan.NotSupported, match="modprobe vcan"):
            await client.create("vcan0")


async def test_daemon_refuses_bad_names_it_receives_raw(daemon: InProcessDaemon) -> None:
    # The client validates too; here the bytes bypass it.
    frames = b"\x01\x10" + b"a" * 16 + b"\x02\x03a/b" + b"\x01\x0f" + b"b" * 15
    r16, slash, fifteen = await raw_exchange(daemon.path, frames, 3)
    assert (r16.success, r16.code) == (False, ErrorCode.INVALID_NAME)
    assert "16 bytes" in r16.message and "never truncated" in r16.message
    assert (slash.success, slash.code) == (False, ErrorCode.INVALID_NAME)
    assert fifteen.success, fifteen.message
    assert "a" * 15 not in daemon.backend._links  # nothing truncated was created


async def test_pipelined_requests_answered_in_order(daemon: InProcessDaemon) -> None:
    ops = [Op.CREATE_VCAN, Op.INTERFACE_UP, Op.STATUS, Op.INTERFACE_DOWN, Op.DELETE, Op.STATUS]
    data = b"".join(encode_request(op, b"pipe0") for op in ops) + b"\x2a\x00" + b"\x06\x00"
    replies = await raw_exchange(daemon.path, data, len(ops) + 2)
    assert [r.success for r in replies] == [True] * 6 + [False, True]
    assert json.loads(replies[2].message)["up"] is True
    assert json.loads(replies[5].message)["exists"] is False
    assert replies[6].code == ErrorCode.NETLINK_CONNECT  # unknown op 42; connection survived
    assert json.loads(replies[7].message)["protocol"] == 1


async def test_idle_half_frame_client_does_not_block_others(daemon: InProcessDaemon) -> None:
    idle = await trio.open_unix_socket(daemon.path)
    async with idle:
        await idle.send_all(b"\x02")  # one byte of a frame, then silence
        with trio.fail_after(5):
            async with AsyncDaemonClient(daemon.path) as client:
                for _ in range(20):
                    await client.create("busy0")


async def test_pipelining_client_does_not_hold_up_others(daemon: InProcessDaemon) -> None:
    # 2,000 pipelined requests arrive in one read; the daemon answers them in batches and
    # lets other clients in between, so a second client's PING is answered before the
    # flood is (the replies, ~120 kB, fit in the socket buffer: nothing waits on the hog).
    flood = 2000
    hog = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with hog:
        hog.connect(daemon.path)
        hog.sendall(encode_request(Op.PING, b"") * flood)
        with trio.fail_after(10):
            async with AsyncDaemonClient(daemon.path) as client:
                await client.ping()
        hog.setblocking(False)
        decoder = ResponseDecoder(max_buffer=1 << 24)
        with contextlib.suppress(BlockingIOError):
            while data := hog.recv(1 << 20):
                decoder.receive_data(data)
        answered = 0
        while isinstance(decoder.next_event(), Response):
            answered += 1
        assert answered < flood  # the flood was not all answered before the PING
        hog.setblocking(True)
        with trio.fail_after(10):
            while answered < flood:  # and it is all answered, in full, afterwards
                decoder.receive_data(await trio.to_thread.run_sync(hog.recv, 1 << 20))
                while isinstance(decoder.next_event(), Response):
                    answered += 1


async def test_c_plus_plus_client_reads_success_from_first_byte(daemon: InProcessDaemon) -> None:
    # The C++ client reads one byte: 0x01 means success. Extra header bytes are harmless.
    (reply,) = await raw_exchange(daemon.path, b"\x01\x05vcan7", 1)
    assert reply.encode()[:1] == b"\x01"


async def test_client_that_vanishes_costs_nothing(daemon: InProcessDaemon) -> None:
    for _ in range(50):
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.connect(daemon.path)
        await sock.send(encode_request(Op.CREATE_VCAN, b"gone0"))
        sock.close()  # never reads the reply
    async with AsyncDaemonClient(daemon.path) as client:
        assert (await client.status("gone0")).exists


async def test_refused_peer_gets_permission_code(daemon: InProcessDaemon) -> None:
    daemon.server.authorize = lambda peer: f"uid {peer.uid} is not welcome"
    (reply,) = await raw_exchange(daemon.path, encode_request(Op.PING, b""), 1)
    assert (reply.success, reply.code) == (False, ErrorCode.PERMISSION_DENIED)
    async with AsyncDaemonClient(daemon.path) as client:
        with pytest.raises(hycan.PermissionDenied, match="not welcome"):
            await client.ping()


async def test_sync_client_in_a_thread(daemon: InProcessDaemon) -> None:
    def work() -> list[object]:
        with Netlink("sync0", socket_path=daemon.path) as net:
            net.up()
            up = net.status().up
            net.down()
            net.delete()
        with DaemonClient(daemon.path) as client, pytest.raises(hycan.InterfaceNotFound):
            client.up("sync0")
        return [up]

    assert await trio.to_thread.run_sync(work) == [True]


async def test_sync_netlink_constructor_creates(daemon: InProcessDaemon) -> None:
    def work() -> None:
        net = Netlink("ctor0", socket_path=daemon.path)
        net.close()
        Netlink("eth0", create=False, socket_path=daemon.path).close()

    await trio.to_thread.run_sync(work)
    assert daemon.backend.status("ctor0").kind == "vcan"


async def test_one_trio_client_shared_by_many_tasks(daemon: InProcessDaemon) -> None:
    # One connection, one request in flight: callers queue on the client's lock, and every
    # one of them gets its own answer.
    async with AsyncDaemonClient(daemon.path) as client:
        names: dict[int, str] = {}

        async def one(i: int) -> None:
            await client.create(f"s{i}")
            names[i] = (await client.status(f"s{i}")).name

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(one, i)
    assert names == {i: f"s{i}" for i in range(20)}


async def test_trio_client_times_out_on_a_silent_server(tmp_path: Path) -> None:
    path = str(tmp_path / "silent.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with listener:
        listener.bind(path)
        listener.listen()  # accepts (in the kernel) and never answers
        client = AsyncDaemonClient(path, timeout=0.2)
        with pytest.raises(hycan.Timeout, match="did not answer in time"):
            await client.ping()
        assert not client._transport.connected  # the connection was dropped, not reused
        await client.aclose()


async def test_many_concurrent_clients(daemon: InProcessDaemon) -> None:
    async def one(i: int) -> None:
        async with AsyncDaemonClient(daemon.path) as client:
            for _ in range(10):
                await client.create(f"c{i}")
                assert (await client.status(f"c{i}")).exists

    async with trio.open_nursery() as nursery:
        for i in range(40):
            nursery.start_soon(one, i)
    assert sum(1 for n in daemon.backend._links if n.startswith("c")) == 40
