"""The audit trail: its line format (tests/audit_grammar.py follows SECURITY.md), levels,
escaping of everything a client controls, and the per-uid budget for failures."""

from __future__ import annotations

import io
import logging
import socket
import tempfile
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hycan import DaemonClient, HycanError
from hycan._handler import Handler
from hycan._peercred import PeerCredentials
from hycan._protocol import Op, Response, ResponseDecoder, encode_request
from hycan.backends.memory import MemoryBackend
from hycan.daemon import logfmt
from hycan.daemon.audit import AuditLog, Throttle, audit_logger
from hycan.daemon.listener import bind_unix
from hycan.daemon.server import Server
from tests.audit_grammar import Line, parse, parse_log
from tests.conftest import DaemonProcess
from tests.strategies import FRAMES

pytestmark = pytest.mark.usefixtures("audit_at_info")


# -- the encoder against the grammar -------------------------------------------------------


@given(st.one_of(st.text(), st.binary(), st.integers(min_value=0)))
def test_every_value_parses_back_to_what_was_written(data: str | bytes | int) -> None:
    line = f"2026-12-02 05:05:25,123 hycan-daemon[1] INFO {logfmt.fields(event='x', v=data)}"
    assert line.isascii() and line.isprintable()
    parsed = parse(line).fields["v"]
    if isinstance(data, bytes):
        assert parsed == data
    elif isinstance(data, str):
        assert parsed.decode("utf-8", "surrogatepass") == data
    else:
        assert parsed == str(data).encode()


def test_plain_tokens_stay_bare_and_the_rest_is_quoted() -> None:
    assert logfmt.value("vcan0") == "vcan0"
    assert logfmt.value(b"can-1.2_x") == "can-1.2_x"
    assert logfmt.value("") == '""'
    assert logfmt.value("a b") == '"a b"'
    assert logfmt.value("x\nINFO uid=0") == '"x\\nINFO uid=0"'
    assert logfmt.value("\x1b[31m\u2028\x85") == '"\\u001b[31m\\u2028\\u0085"'
    assert logfmt.value(b"\xff\xc3\xa9") == '"\\xff\\u00e9"'


def test_log_records_are_one_line_with_the_traceback_escaped() -> None:
    formatter = logfmt.LineFormatter()
    try:
        raise ValueError("bad\nINFO event=request uid=0 op=DELETE name=can0 result=ok")
    except ValueError:
        record = logging.LogRecord(
            "hycan.daemon", logging.ERROR, __file__, 1, "oops %s", ("\x1b[2J",), True
        )
        import sys

        record.exc_info = sys.exc_info()
    text = formatter.format(record)
    assert "\n" not in text and text.isascii() and text.isprintable()
    line = parse(text)
    assert line.level == "ERROR"
    assert line.text("message") == "oops \x1b[2J"
    assert "ValueError: bad\nINFO event=request" in line.text("traceback")


# -- the live daemon's lines ------------------------------------------------------------------

CHANGES_AND_FAILURES = [
    ("CREATE_VCAN", b"vcan0", None),
    ("INTERFACE_UP", b"vcan0", None),
    ("INTERFACE_UP", b"missing0", 7),
    ("STATUS", b"bad/name", 11),
    ("DELETE", b"x\nINFO uid=0", 11),
    ("SET_CAN", b"vcan0", 19),
    ("0x99", b"vcan0", 6),
]
ROUTINE = [("PING", b"", None), ("STATUS", b"lo", None)]


def _exercise(path: str) -> None:
    with DaemonClient(path) as client:
        client.ping()
        client.status("lo")
        client.create("vcan0")
        client.up("vcan0")
        with pytest.raises(HycanError):
            client.up("missing0")
    with socket.socket(socket.AF_UNIX) as raw:  # names and payloads the library would refuse
        raw.connect(path)
        raw.sendall(encode_request(Op.STATUS, b"bad/name"))
        assert raw.recv(4096)[:2] == b"\x00\x0b"
        raw.sendall(encode_request(Op.DELETE, b"x\nINFO uid=0"))  # tries to forge a line
        assert raw.recv(4096)[:2] == b"\x00\x0b"
        raw.sendall(encode_request(Op.SET_CAN, b"vcan0", b'{"\\n2026 INFO \\u001b": 1}'))
        assert raw.recv(4096)[:2] == b"\x00\x13"
        raw.sendall(encode_request(0x99, b"vcan0"))
        assert raw.recv(4096)[:2] == b"\x00\x06"


def _requests(lines: list[Line], level: str) -> list[tuple[str, bytes, int | None]]:
    found = []
    for line in lines:
        if line.level == level and line.fields.get("event") == b"request":
            code = line.fields.get("code")
            found.append(
                (line.text("op"), line.fields["name"], None if code is None else int(code))
            )
    return found


@pytest.mark.parametrize(("level", "routine"), [("INFO", []), ("DEBUG", ROUTINE)])
def test_changes_and_failures_are_info_routine_queries_debug_and_every_line_parses(
    tmp_path: Path, level: str, routine: list[tuple[str, bytes, int | None]]
) -> None:
    daemon = DaemonProcess(
        str(tmp_path / "hycan.sock"), "--backend", "memory", "--log-level", level
    ).start()
    _exercise(daemon.path)
    _, log = daemon.stop()
    lines = parse_log(log)  # every line the daemon wrote follows the grammar
    assert _requests(lines, "INFO") == CHANGES_AND_FAILURES
    assert _requests(lines, "DEBUG") == routine


# -- hypothesis: one line per request, fields parse back to what was sent -------------------


async def _serve_and_send(
    path: str, frames_per_client: list[list[bytes]], log: io.StringIO
) -> list[Response]:
    server = Server(Handler(MemoryBackend()), audit=AuditLog(log, throttle=None))
    bound = bind_unix(path)
    answers: list[Response] = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, bound.sock)

            async def client(frames: list[bytes]) -> None:
                stream = await trio.open_unix_socket(path)
                async with stream:
                    decoder = ResponseDecoder()
                    for frame in frames:
                        await stream.send_all(frame)
                        while not isinstance(event := decoder.next_event(), Response):
                            decoder.receive_data(await stream.receive_some(65536))
                        answers.append(event)

            with trio.fail_after(30):
                async with trio.open_nursery() as clients:
                    for frames in frames_per_client:
                        clients.start_soon(client, frames)
            server.shutdown()
    finally:
        bound.remove()
    return answers


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clients=st.lists(st.lists(FRAMES, min_size=1, max_size=6), min_size=1, max_size=4))
def test_each_request_adds_exactly_one_line_that_parses_back(clients: list[list[bytes]]) -> None:
    audit_logger.setLevel(logging.DEBUG)  # successful PING/STATUS too
    log = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="hycan-audit-") as tmp:
        answers = trio.run(_serve_and_send, f"{tmp}/s.sock", clients, log)
    sent = [frame for frames in clients for frame in frames]
    assert len(answers) == len(sent)
    requests = [line for line in parse_log(log.getvalue()) if line.fields["event"] == b"request"]
    assert len(requests) == len(sent)
    # Lines of one client come in its order; match each frame to its line by content.
    remaining = list(requests)
    for frame in sent:
        op, name = frame[0], frame[2 : 2 + frame[1]]
        match = next(
            line for line in remaining if line.fields["name"] == name and _op_of(line) == op
        )
        remaining.remove(match)
    assert not remaining


def _op_of(line: Line) -> int:
    label = line.text("op")
    return int(label, 16) if label.startswith("0x") else int(Op[label])


# -- the budget -----------------------------------------------------------------------------


def test_throttle_allows_a_burst_then_a_rate_and_summarizes_the_rest() -> None:
    now = [0.0]
    throttle = Throttle(burst=3, rate=1.0, clock=lambda: now[0])
    peer = PeerCredentials(pid=42, uid=1000, gid=1000, groups=())
    other = PeerCredentials(pid=7, uid=1001, gid=1001, groups=())
    assert [throttle.allow(peer) for _ in range(5)] == [True, True, True, False, False]
    assert throttle.allow(other)  # another uid has its own budget
    assert throttle.summaries() == []  # not due before a second has passed
    now[0] = 1.5
    assert throttle.allow(peer)  # refilled at the rate
    assert not throttle.allow(peer, connection=True)
    [summary] = throttle.summaries()
    fields = parse(f"2026-12-02 05:05:25,123 hycan-daemon[1] {summary}").fields
    assert (fields["uid"], fields["count"], fields["requests"], fields["connections"]) == (
        b"1000",
        b"3",
        b"2",
        b"1",
    )
    assert throttle.summaries() == []  # said once


def test_changes_beyond_their_budget_are_folded_per_op_and_link() -> None:
    now = [0.0]
    throttle = Throttle(clock=lambda: now[0], change_burst=2, change_rate=1.0)
    peer = PeerCredentials(pid=42, uid=1000, gid=1000, groups=())
    allowed = [throttle.allow_change(peer, op, "vcan0") for op in ["UP", "DOWN"] * 3]
    assert allowed == [True, True, False, False, False, False]
    now[0] = 1.0
    lines = sorted(throttle.summaries())
    parsed = [parse(f"2026-12-02 05:05:25,123 hycan-daemon[1] {line}") for line in lines]
    assert [(p.text("op"), p.text("name"), p.text("count")) for p in parsed] == [
        ("DOWN", "vcan0", "2"),
        ("UP", "vcan0", "2"),
    ]
    assert all(p.level == "INFO" and p.text("result") == "ok" for p in parsed)


class _Flaky(io.StringIO):
    """A stream whose writes fail (ENOSPC) while ``full`` is set."""

    full = True

    def write(self, text: str) -> int:
        if self.full:
            raise OSError(28, "No space left on device")
        return super().write(text)


def test_lines_a_failed_write_lost_are_counted_in_the_next_good_write() -> None:
    stream = _Flaky()
    log = AuditLog(stream, throttle=None)
    peer = PeerCredentials(pid=42, uid=1000, gid=1000, groups=())
    log.request(peer, "INTERFACE_UP", b"vcan0")
    log.request(peer, "INTERFACE_UP", b"vcan1")
    log.flush()  # fails: nothing raised
    stream.full = False
    log.request(peer, "INTERFACE_UP", b"vcan2")
    log.flush()
    lost, written = parse_log(stream.getvalue())
    assert (lost.text("event"), lost.text("count")) == ("lost", "2")
    assert written.fields["name"] == b"vcan2"


def test_a_uid_is_forgotten_only_once_both_its_buckets_are_full_again() -> None:
    now = [0.0]
    throttle = Throttle(burst=2, rate=0.1, clock=lambda: now[0], change_burst=2, change_rate=1.0)
    peer = PeerCredentials(pid=42, uid=1000, gid=1000, groups=())
    assert [throttle.allow(peer) for _ in range(3)] == [True, True, False]
    now[0] = 1.0
    throttle.summaries()  # says the suppressed one
    now[0] = 5.0  # the change bucket is full again (2 s), the failure bucket not (20 s)
    throttle.summaries()
    assert [throttle.allow(peer) for _ in range(2)] == [False, False]  # still spent


def test_lease_end_lines_follow_the_grammar() -> None:
    out = io.StringIO()
    log = AuditLog(out, throttle=None)
    peer = PeerCredentials(42, 1000, 1000, ())
    log.lease_ended(peer, "hyc\nx", None)
    log.lease_ended(None, "orphan0", "Device or resource busy")
    log.flush()
    first, second = parse_log(out.getvalue())
    assert first.level == "INFO" and first.fields["event"] == b"lease-end"
    assert first.fields["uid"] == b"1000" and first.fields["name"] == b"hyc\nx"
    assert (first.fields["cause"], first.fields["result"]) == (b"connection closed", b"deleted")
    assert second.level == "WARNING" and "uid" not in second.fields
    assert (second.fields["cause"], second.fields["result"]) == (b"holder gone", b"kept")
