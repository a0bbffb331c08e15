"""Faults, load and hostile input: the daemon keeps serving and costs a bad client nothing."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hycan
from hycan import AsyncDaemonClient, DaemonClient
from hycan._protocol import Op, Response, ResponseDecoder, encode_request
from hycan.errors import ErrorCode
from tests.conftest import DaemonProcess, InProcessDaemon, Netns


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fd_count(pid: int, expected: int) -> int:
    """The daemon's fd count once it has read the EOFs of closed clients (bounded wait)."""
    deadline = time.monotonic() + 10
    count = fd_count(pid)
    while count != expected and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a count the daemon updates asynchronously; bounded
        count = fd_count(pid)
    return count


def refusals_before_served(path: str) -> int:
    """How many times a fresh client was refused as busy before it got served (bounded)."""
    for refused in range(100):
        try:
            with DaemonClient(path) as client:
                assert client.ping()["protocol"] == 1
                return refused
        except hycan.DaemonBusy:
            time.sleep(0.05)  # the daemon has not yet read a departed client's EOF
    raise AssertionError("never served after a slot was freed")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def read_responses(sock: socket.socket, count: int) -> list[Response]:
    decoder = ResponseDecoder()
    got: list[Response] = []
    while len(got) < count:
        data = sock.recv(65536)
        assert data, "daemon closed the connection"
        decoder.receive_data(data)
        while isinstance(event := decoder.next_event(), Response):
            got.append(event)
    return got


# -- hostile input ---------------------------------------------------------------------


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(chunks=st.lists(st.binary(min_size=1, max_size=64), max_size=12))
def test_garbage_split_anywhere_then_a_good_request(
    daemon_process: DaemonProcess, chunks: list[bytes]
) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(daemon_process.path)
        for chunk in chunks:
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):  # whatever the garbage earned, until the daemon closes
            pass
    with DaemonClient(daemon_process.path) as client:  # and the daemon still serves
        assert client.ping()["protocol"] == 1


# -- load ---------------------------------------------------------------------------------


def test_200_clients_x_50_requests_in_order(daemon_process: DaemonProcess) -> None:
    assert daemon_process.proc is not None
    pid = daemon_process.proc.pid
    fds_before = fd_count(pid)

    async def one(i: int, results: list[int]) -> None:
        async with AsyncDaemonClient(daemon_process.path, timeout=30) as client:
            for j in range(50):
                name = f"l{i}-{j % 5}"
                if j % 5 == 0:
                    await client.create(name)
                status = await client.status(f"l{i}-0")
                assert status.exists and status.name == f"l{i}-0"
                results[i] += 1

    async def main() -> list[int]:
        results = [0] * 200
        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i, results)
        return results

    results = trio.run(main)
    assert results == [50] * 200
    # Connections are gone: no fd leaked, and memory stays small.
    assert settled_fd_count(pid, fds_before) == fds_before
    assert rss_kib(pid) < 80 * 1024, f"daemon RSS {rss_kib(pid)} KiB after 10,000 requests"


def test_pipelined_burst_answered_in_order(daemon_process: DaemonProcess) -> None:
    names = [f"p{i}".encode() for i in range(500)]
    burst = b"".join(
        encode_request(Op.CREATE_VCAN, n) + encode_request(Op.STATUS, n) for n in names
    )
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(daemon_process.path)
        sock.sendall(burst)
        replies = read_responses(sock, 1000)
    assert all(r.success for r in replies)
    assert [r.message for r in replies[::2]] == [f"{n.decode()} created" for n in names]
    assert all(
        f'"name":"{n.decode()}"' in r.message for n, r in zip(names, replies[1::2], strict=True)
    )


# -- faults -------------------------------------------------------------------------------


def test_1000_vanishing_clients_leak_nothing(daemon_process: DaemonProcess) -> None:
    assert daemon_process.proc is not None
    pid = daemon_process.proc.pid
    fds_before = fd_count(pid)
    for i in range(1000):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(daemon_process.path)
        if i % 3 == 0:
            sock.sendall(b"\x01")  # half a frame, then gone
        elif i % 3 == 1:
            sock.sendall(encode_request(Op.CREATE_VCAN, b"gone0") * 50)  # never reads
        else:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            sock.sendall(encode_request(Op.PING, b""))  # reset
        sock.close()
    with DaemonClient(daemon_process.path) as client:  # still alive, no SIGPIPE death
        assert client.status("gone0").exists
    # Each vanished client's task ends when its EOF is read.
    assert settled_fd_count(pid, fds_before) == fds_before
    assert daemon_process.proc.poll() is None


async def test_idle_half_frame_clients_do_not_slow_active_ones(daemon: InProcessDaemon) -> None:
    idle = [await trio.open_unix_socket(daemon.path) for _ in range(50)]
    for stream in idle:
        await stream.send_all(b"\x02\x05vc")  # a partial frame, then silence
    with trio.fail_after(10):
        async with AsyncDaemonClient(daemon.path) as client:
            for _ in range(200):
                await client.status("eth0")
    for stream in idle:
        await stream.aclose()


def test_client_limit(tmp_path: Path) -> None:
    proc = DaemonProcess(str(tmp_path / "d.sock"), "--backend", "memory", "--max-clients", "3")
    proc.start()
    try:
        held = [DaemonClient(proc.path) for _ in range(3)]
        for client in held:
            client.ping()
        with pytest.raises(hycan.DaemonBusy) as info, DaemonClient(proc.path) as extra:
            extra.ping()
        assert info.value.code == ErrorCode.BUSY
        assert held[0].ping()["protocol"] == 1  # existing clients keep working
        held[0].close()
        # A slot is free again once the daemon saw EOF; each early retry is refused (and logged).
        retries = refusals_before_served(proc.path)
        for client in held[1:]:
            client.close()
    finally:
        _, log = proc.stop()
    busy = [line for line in log.splitlines() if "event=connect" in line and "result=busy" in line]
    assert len(busy) == 1 + retries
    assert all("3 clients connected (--max-clients)" in line for line in busy)


def test_idle_connection_is_closed_and_client_reconnects(tmp_path: Path) -> None:
    proc = DaemonProcess(str(tmp_path / "d.sock"), "--backend", "memory", "--idle-timeout", "0.2")
    proc.start()
    try:
        with DaemonClient(proc.path) as client:
            client.create("vcan0")
            with socket.socket(socket.AF_UNIX) as raw:  # an idler: the daemon hangs up on it
                raw.settimeout(10)
                raw.connect(proc.path)
                assert raw.recv(1) == b""
            assert client.status("vcan0").exists  # transparently reconnected
    finally:
        proc.stop()


def test_sigkill_then_restart_on_same_path(tmp_path: Path) -> None:
    path = str(tmp_path / "d.sock")
    first = DaemonProcess(path, "--backend", "memory").start()
    with DaemonClient(path) as client:
        client.ping()
        first.stop(signal.SIGKILL)
        assert os.path.exists(path)  # a stale socket stays behind
        with pytest.raises(hycan.DaemonUnavailable):
            client.ping()  # the daemon died: no hang
        second = DaemonProcess(path, "--backend", "memory").start()
        try:
            assert client.ping()["protocol"] == 1
        finally:
            second.stop()


def test_sigterm_with_idle_and_half_sent_clients_exits_promptly(tmp_path: Path) -> None:
    proc = DaemonProcess(str(tmp_path / "d.sock"), "--backend", "memory").start()
    socks = []
    for i in range(20):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(proc.path)
        if i % 2:
            sock.sendall(b"\x05")  # half-sent
        socks.append(sock)
    with DaemonClient(proc.path) as client:
        client.ping()  # everyone is connected and served
    started = time.monotonic()
    status, _ = proc.stop(signal.SIGTERM)
    elapsed = time.monotonic() - started
    for sock in socks:
        sock.close()
    assert status == 0
    assert not os.path.exists(proc.path)
    # idle clients do not extend the 2 s grace period (generous bound: this VM is noisy)
    assert elapsed < 10, f"shutdown took {elapsed:.1f}s"


def test_sigterm_during_load_never_answers_undone_work(tmp_path: Path) -> None:
    proc = DaemonProcess(str(tmp_path / "d.sock"), "--backend", "memory").start()
    answered: list[str] = []

    async def worker(i: int) -> None:
        try:
            async with AsyncDaemonClient(proc.path, timeout=10, fallback=False) as client:
                for j in range(1000):
                    await client.create(f"t{i}x{j}")
                    answered.append(f"t{i}x{j}")
        except hycan.DaemonUnavailable:
            return

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(worker, i)
            while len(answered) < 400:
                await trio.sleep(0.01)
            assert proc.proc is not None
            proc.proc.send_signal(signal.SIGTERM)

    trio.run(main)
    assert proc.proc is not None
    assert proc.proc.wait(timeout=15) == 0
    _, log = proc.stop()
    performed = set(re.findall(r"op=CREATE_VCAN name=(\S+) result=ok", log))
    assert answered and set(answered) <= performed


@pytest.mark.netns
def test_link_deleted_between_requests(netns: Netns, netns_daemon: DaemonProcess) -> None:
    with DaemonClient(netns_daemon.path) as client:
        client.up("veth0")
        netns.ip("link", "del", "veth0")  # takes veth1 with it
        with pytest.raises(hycan.InterfaceNotFound):
            client.down("veth0")
        assert not client.status("veth1").exists
        assert client.status("lo").exists  # and it keeps serving


def test_daemon_dies_mid_call_gives_unavailable(tmp_path: Path) -> None:
    path = str(tmp_path / "dying.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()

    def serve_then_die() -> None:
        conn, _ = listener.accept()
        conn.recv(64)
        conn.close()  # dies before answering

    pid = os.fork()
    if pid == 0:
        try:
            serve_then_die()
            serve_then_die()  # the client's one reconnect meets the same fate
        finally:
            os._exit(0)
    try:
        with pytest.raises(hycan.DaemonUnavailable), DaemonClient(path, timeout=5) as client:
            client.ping()
    finally:
        listener.close()
        os.waitpid(pid, 0)


def test_daemon_process_never_exits_on_client_faults(daemon_process: DaemonProcess) -> None:
    assert daemon_process.proc is not None
    subprocess.run(["true"], check=True)
    assert daemon_process.proc.poll() is None
