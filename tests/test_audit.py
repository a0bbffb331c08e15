"""The audit trail: what is logged at which level (a daemon subprocess, memory backend)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hycan import DaemonClient, HycanError
from hycan._protocol import Op, encode_request
from tests.conftest import DaemonProcess

CHANGES_AND_FAILURES = [
    "CREATE_VCAN name=vcan0 result=ok",
    "INTERFACE_UP name=vcan0 result=ok",
    "INTERFACE_UP name=missing0 result=error 7: interface missing0 not found",
    "STATUS name=bad/name result=error 11",
    "DELETE name='x\\nINFO uid=0' result=error 11",
    "0x99 name=vcan0 result=error 6: bad frame: unknown op 153",
]
ROUTINE = ["PING name= result=ok", "STATUS name=lo result=ok"]


def _exercise(path: str) -> None:
    with DaemonClient(path) as client:
        client.ping()
        client.status("lo")
        client.create("vcan0")
        client.up("vcan0")
        with pytest.raises(HycanError):
            client.up("missing0")
    with socket.socket(socket.AF_UNIX) as raw:  # a name the client library would refuse
        raw.connect(path)
        raw.sendall(encode_request(Op.STATUS, b"bad/name"))
        assert raw.recv(4096)[:2] == b"\x00\x0b"
        raw.sendall(encode_request(Op.DELETE, b"x\nINFO uid=0"))  # tries to forge a line
        assert raw.recv(4096)[:2] == b"\x00\x0b"
        raw.sendall(encode_request(0x99, b"vcan0"))
        assert raw.recv(4096)[:2] == b"\x00\x06"


def _audit_ops(log: str, level: str) -> list[str]:
    """``op=...`` of the audit lines at ``level``, a failure's message cut after its code."""
    ops = []
    for line in log.splitlines():
        if f" {level} uid=" in line:
            op = line.split(" op=", 1)[1]
            ops.append(op.split(":", 1)[0] if "result=error 11" in op else op)
    return ops


def test_changes_and_failures_are_info_and_routine_queries_are_debug(tmp_path: Path) -> None:
    daemon = DaemonProcess(str(tmp_path / "hycan.sock"), "--backend", "memory").start()
    _exercise(daemon.path)
    _, log = daemon.stop()
    assert _audit_ops(log, "INFO") == CHANGES_AND_FAILURES
    assert _audit_ops(log, "DEBUG") == []
    assert not [line for line in log.splitlines() if line.startswith("INFO uid=0")]


def test_debug_level_also_logs_routine_queries(tmp_path: Path) -> None:
    daemon = DaemonProcess(
        str(tmp_path / "hycan.sock"), "--backend", "memory", "--log-level", "DEBUG"
    ).start()
    _exercise(daemon.path)
    _, log = daemon.stop()
    assert _audit_ops(log, "DEBUG") == ROUTINE
    assert _audit_ops(log, "INFO") == CHANGES_AND_FAILURES
