"""WATCH: link events from the daemon (sans-IO parts, the in-process daemon, the real kernel
in a netns, the CLI)."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import hycan
from hycan import AsyncDaemonClient, DaemonClient, LinkEvent
from hycan._events import (
    MAX_WATCHED_NAMES,
    QUEUE_CAPACITY,
    EventQueue,
    LinkTracker,
    watch_names,
    watch_payload,
)
from hycan._handler import Handler
from hycan._protocol import Op, Response, ResponseDecoder, encode_request
from hycan._status import LinkStatus
from hycan.backends.memory import MemoryBackend, MemoryMonitor
from hycan.daemon.audit import AuditLog
from hycan.daemon.listener import bind_unix
from hycan.daemon.server import Server
from hycan.errors import ErrorCode
from tests.conftest import DaemonProcess, InProcessDaemon, Netns
from tests.strategies import PAYLOADS


def link(name: str, index: int, **fields: object) -> LinkStatus:
    values: dict[str, object] = {"kind": "vcan", "up": False, "operstate": "DOWN"}
    values.update(fields)
    return LinkStatus(name, True, ifindex=index, **values)  # type: ignore[arg-type]


def test_tracker_turns_changes_into_events() -> None:
    tracker = LinkTracker([link("vcan0", 3)])
    assert tracker.update(link("vcan0", 3, up=True, operstate="UNKNOWN")) == [
        LinkEvent("up", "vcan0", 3, "vcan")
    ]
    assert tracker.update(link("vcan0", 3, up=True, operstate="UNKNOWN")) == []  # no change
    assert tracker.update(link("bus0", 3, up=True, operstate="UNKNOWN")) == [
        LinkEvent("renamed", "bus0", 3, "vcan", old_name="vcan0")
    ]
    assert tracker.update(link("bus0", 3, up=True, operstate="LOWERLAYERDOWN")) == [
        LinkEvent("carrier", "bus0", 3, "vcan", carrier=False)
    ]
    assert tracker.update(link("bus0", 3)) == [LinkEvent("down", "bus0", 3, "vcan")]
    assert tracker.update(link("new0", 9)) == [LinkEvent("added", "new0", 9, "vcan")]
    assert tracker.update(LinkStatus("", False, ifindex=3)) == [
        LinkEvent("removed", "bus0", 3, "vcan")
    ]
    assert tracker.update(LinkStatus("", False, ifindex=3)) == []  # already gone


def test_tracker_reports_can_state_changes_and_resyncs() -> None:
    def can(state: str) -> LinkStatus:
        return link("can0", 4, kind="can", up=True, operstate="UP", can={"state": state})

    tracker = LinkTracker([can("STOPPED"), link("vcan0", 5)])
    assert tracker.has_can(None) and tracker.has_can(frozenset({"can0"}))
    assert not tracker.has_can(frozenset({"vcan0"}))
    assert tracker.resync([can("ERROR-PASSIVE")]) == [
        LinkEvent("can_state", "can0", 4, "can", state="ERROR-PASSIVE", old_state="STOPPED"),
        LinkEvent("removed", "vcan0", 5, "vcan"),
    ]


def test_a_queue_that_is_not_read_keeps_order_and_counts_what_it_dropped() -> None:
    queue = EventQueue(frozenset({"vcan0"}), capacity=3)
    events = [LinkEvent("up" if i % 2 else "down", "vcan0", 3) for i in range(10)]
    assert not queue.offer(LinkEvent("up", "other0", 4))  # not watched
    for event in events:
        assert queue.offer(event)
    taken = queue.take()
    assert taken == [*events[:3], LinkEvent("lost", lost=7)]
    assert queue.take() == []
    assert queue.offer(LinkEvent("renamed", "bus0", 3, old_name="vcan0"))  # its old name


@given(st.builds(LinkEvent, st.sampled_from(hycan._events.EVENTS), st.text(max_size=15)))
def test_events_survive_their_json(event: LinkEvent) -> None:
    assert LinkEvent.from_json(event.to_json()) == event


@given(st.binary(max_size=300))
def test_any_watch_payload_is_names_or_a_clear_refusal(payload: bytes) -> None:
    try:
        names = watch_names(payload)
    except hycan.InvalidArgument as exc:
        assert exc.message.startswith("invalid WATCH payload")
    else:
        assert names is None or 0 < len(names) <= MAX_WATCHED_NAMES


def test_watch_payload_round_trip_and_limits() -> None:
    assert watch_names(watch_payload(["vcan0", "can0"])) == {"vcan0", "can0"}
    assert watch_names(watch_payload([])) is None
    with pytest.raises(hycan.InvalidArgument, match="at most 64 names"):
        watch_names(watch_payload(f"v{i}" for i in range(65)))
    with pytest.raises(hycan.InvalidArgument, match="is not a link name"):
        watch_names(b'{"names": ["a/b"]}')
    with pytest.raises(hycan.InvalidArgument, match="expected"):
        watch_names(b'{"names": "vcan0"}')


async def next_event(watch: object) -> LinkEvent:
    event = await watch.next_event(timeout=10)  # type: ignore[attr-defined]
    assert event is not None
    return event


async def test_watch_sees_links_come_go_and_change(daemon: InProcessDaemon) -> None:
    async with AsyncDaemonClient(daemon.path) as client:
        async with client.watch() as watch, AsyncDaemonClient(daemon.path) as other:
            await other.create("vcan0")
            assert await next_event(watch) == LinkEvent("added", "vcan0", 3, "vcan")
            await other.up("vcan0")
            assert (await next_event(watch)).event == "up"
            await client.down("vcan0")  # the watching client stays free for calls
            assert (await next_event(watch)).event == "down"
            await other.delete("vcan0")
            assert await next_event(watch) == LinkEvent("removed", "vcan0", 3, "vcan")
        await trio.testing.wait_all_tasks_blocked()  # the daemon has seen the close
        assert daemon.server.hub.watchers == 0  # leaving the context ended the watch


async def test_watch_by_name_and_can_state(daemon: InProcessDaemon) -> None:
    daemon.backend.plug_can_adapter("can0")
    async with AsyncDaemonClient(daemon.path) as client, client.watch("can0") as watch:
        await client.create("vcan0")  # not watched
        await client.up("can0")
        assert await next_event(watch) == LinkEvent("up", "can0", 3, "can")
        # The kernel announces the start (STOPPED -> ERROR-ACTIVE) with the up...
        assert await next_event(watch) == LinkEvent(
            "can_state", "can0", 3, "can", state="ERROR-ACTIVE", old_state="STOPPED"
        )
        # ...but not error-passive: the daemon's poll finds it.
        daemon.backend.set_can_state("can0", "ERROR-PASSIVE")
        assert await next_event(watch) == LinkEvent(
            "can_state", "can0", 3, "can", state="ERROR-PASSIVE", old_state="ERROR-ACTIVE"
        )


async def test_watch_is_refused_with_a_reason(daemon: InProcessDaemon) -> None:
    async with AsyncDaemonClient(daemon.path) as client:
        with pytest.raises(hycan.InvalidArgument, match="is not a link name") as info:
            await client.watch("bad/name").start()
        assert info.value.code == ErrorCode.INVALID_ARGUMENT
        assert daemon.server.hub.watchers == 0


def raw_watch(path: str, payload: bytes = b"") -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.setblocking(False)
    sock.sendall(encode_request(Op.WATCH, b"", payload))
    return sock


async def replies(sock: socket.socket, decoder: ResponseDecoder) -> list[Response]:
    """The complete replies that arrived with the next read."""
    await trio.lowlevel.wait_readable(sock)
    data = sock.recv(65536)
    assert data, "the daemon closed the connection"
    decoder.receive_data(data)
    found = []
    while isinstance(reply := decoder.next_event(), Response):
        found.append(reply)
    return found


async def test_a_watcher_that_never_reads_costs_bounded_memory(daemon: InProcessDaemon) -> None:
    """Attack: watch, then never read, while links change without pause. The daemon
    keeps at most QUEUE_CAPACITY events for it, and says how many it dropped: every
    event is either delivered or counted."""
    sock = raw_watch(daemon.path)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    decoder = ResponseDecoder()
    with trio.fail_after(10):
        received = await replies(sock, decoder)  # the WATCH reply: the watch is on
    assert received[0].success and json.loads(received[0].message)["queue"] == QUEUE_CAPACITY
    toggles = 3000
    async with AsyncDaemonClient(daemon.path) as client:
        await client.create("vcan0")
        for _ in range(toggles):
            await client.up("vcan0")
            await client.down("vcan0")
        (watcher,) = daemon.server.hub._watchers
        assert len(watcher.queue._events) <= QUEUE_CAPACITY
        await client.ping()  # the daemon still answers everyone else
    events = [LinkEvent.from_json(r.message) for r in received[1:]]
    wanted = 1 + 2 * toggles  # added, then up and down each time
    with trio.fail_after(20):
        while len(events) + sum(e.lost - 1 for e in events if e.event == "lost") < wanted:
            events += [LinkEvent.from_json(r.message) for r in await replies(sock, decoder)]
    assert events[0] == LinkEvent("added", "vcan0", 3, "vcan")
    dropped = sum(e.lost for e in events if e.event == "lost")
    delivered = [e for e in events if e.event != "lost"]
    assert dropped > 0
    assert len(delivered) + dropped == wanted
    sock.close()


async def test_anything_sent_after_watch_ends_it(daemon: InProcessDaemon) -> None:
    sock = raw_watch(daemon.path)
    with trio.fail_after(10):
        assert (await replies(sock, ResponseDecoder()))[0].success
        sock.sendall(encode_request(Op.PING, b"", b""))
        await trio.lowlevel.wait_readable(sock)
        # Closed, no PING reply (a reset when the daemon left the rest of the PING unread).
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(65536) == b""
        assert daemon.server.hub.watchers == 0
    sock.close()


@pytest.mark.netns
def test_watch_sees_the_real_kernel(netns: Netns, netns_daemon: DaemonProcess) -> None:
    """As root in a netns: `ip link` changes (not the daemon's) reach a watcher."""
    with DaemonClient(netns_daemon.path) as client, client.watch("veth0", "dummy9") as watch:
        netns.ip("link", "set", "veth0", "up")
        up = watch.next_event(timeout=10)
        netns.ip("link", "set", "veth0", "name", "veth9")
        renamed = watch.next_event(timeout=10)
        netns.ip("link", "add", "dummy9", "type", "veth", "peer", "name", "dummy8")
        added = watch.next_event(timeout=10)
        netns.ip("link", "del", "dummy9")
        removed = watch.next_event(timeout=10)
    assert up is not None and (up.event, up.name, up.kind) == ("up", "veth0", "veth")
    assert renamed is not None and (renamed.event, renamed.name, renamed.old_name) == (
        "renamed",
        "veth9",
        "veth0",
    )
    assert added is not None and (added.event, added.name) == ("added", "dummy9")
    assert removed is not None and (removed.event, removed.name) == ("removed", "dummy9")


def test_cli_watch_prints_events(daemon_process: DaemonProcess) -> None:
    watcher = subprocess.Popen(
        [sys.executable, "-m", "hycan.cli", "--socket", daemon_process.path, "--json",
         "watch", "vcan0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert watcher.stdout is not None
        assert watcher.stderr is not None
        assert watcher.stderr.readline().startswith("hycan: watching vcan0")  # it is on
        with DaemonClient(daemon_process.path) as client:
            client.create("vcan0")
            first = json.loads(watcher.stdout.readline())
            client.up("vcan0")
            second = json.loads(watcher.stdout.readline())
        assert (first["event"], first["name"]) == ("added", "vcan0")
        assert (second["event"], second["name"]) == ("up", "vcan0")
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)


@settings(max_examples=60, deadline=None)
@given(payload=PAYLOADS)
def test_hostile_watch_payloads_are_answered_and_leave_nothing(payload: bytes) -> None:
    """Any WATCH payload gets one reply (watching, or a refusal); a refused one leaves
    the connection usable and no watcher behind."""

    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="hycan-watch-") as tmp:
            path = f"{tmp}/s.sock"
            server = Server(Handler(MemoryBackend(), backend_name="memory"))
            bound = bind_unix(path)
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(server.serve, bound.sock)
                    sock = raw_watch(path, payload[:4096])
                    with trio.fail_after(10):
                        (reply, *_) = await replies(sock, ResponseDecoder())
                        if not reply.success:
                            assert reply.code == ErrorCode.INVALID_ARGUMENT
                            sock.sendall(encode_request(Op.PING, b"", b""))
                            (pong,) = await replies(sock, ResponseDecoder())
                            assert pong.success
                    sock.close()
                    await trio.testing.wait_all_tasks_blocked()
                    assert server.hub.watchers == 0
                    server.shutdown()
            finally:
                bound.remove()

    trio.run(main)


class _NoMonitor(MemoryBackend):
    """A kernel that cannot be listened to (the daemon is out of descriptors)."""

    def monitor(self) -> MemoryMonitor:
        raise OSError(errno.EMFILE, "Too many open files")


async def test_a_watch_that_cannot_listen_is_refused_and_logged_as_refused(
    tmp_path: Path, nursery: trio.Nursery, audit_at_info: None
) -> None:
    """The client gets "internal error" (code 15) with the reason, and the audit line
    says the same: the log must not call a WATCH successful that the client was told
    failed."""
    stream = io.StringIO()
    server = Server(Handler(_NoMonitor()), audit=AuditLog(stream, throttle=None))
    bound = bind_unix(str(tmp_path / "s.sock"))
    await nursery.start(server.serve, bound.sock)
    try:
        async with AsyncDaemonClient(bound.path) as client:
            with pytest.raises(hycan.HycanError, match="cannot watch links: Too many") as info:
                await client.watch().start()
            assert info.value.code == ErrorCode.INTERNAL
            await client.ping()  # the connection still carries requests
        (line,) = [line for line in stream.getvalue().splitlines() if "op=WATCH" in line]
        assert f"code={ErrorCode.INTERNAL:d}" in line and "Too many open files" in line, line
        assert server.hub.watchers == 0
    finally:
        server.shutdown()
        bound.remove()
