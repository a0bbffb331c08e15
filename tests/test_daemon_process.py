"""``hycan-daemon`` as a real process: start-up rules, signals, the sync client against it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

import hycan
from hycan import DaemonClient, Netlink
from hycan.errors import ErrorCode
from tests.conftest import DaemonProcess, daemon_command


def test_ready_line_and_clean_sigterm(tmp_path: Path) -> None:
    path = str(tmp_path / "d.sock")
    proc = DaemonProcess(path, "--backend", "memory").start()
    assert f"serving on {path}" in proc.ready_line
    assert os.path.exists(path)
    status, _ = proc.stop(signal.SIGTERM)
    assert status == 0
    assert not os.path.exists(path)


def test_sigint_also_exits_zero(tmp_path: Path) -> None:
    proc = DaemonProcess(str(tmp_path / "d.sock"), "--backend", "memory").start()
    assert proc.stop(signal.SIGINT)[0] == 0
    assert not os.path.exists(proc.path)


def test_second_daemon_on_live_path_exits_nonzero(daemon_process: DaemonProcess) -> None:
    result = subprocess.run(
        daemon_command("--backend", "memory", daemon_process.path),
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode != 0
    assert "already running" in result.stderr and daemon_process.path in result.stderr
    with DaemonClient(daemon_process.path) as client:  # the first one is untouched
        assert client.ping()["backend"] == "memory"


def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # a socket file nobody listens on, like after SIGKILL
    proc = DaemonProcess(path, "--backend", "memory").start()
    try:
        with DaemonClient(path) as client:
            assert client.ping()["protocol"] == 1
    finally:
        proc.stop()


def test_non_socket_file_is_never_deleted(tmp_path: Path) -> None:
    path = tmp_path / "precious.txt"
    path.write_text("keep me")
    result = subprocess.run(
        daemon_command("--backend", "memory", str(path)), capture_output=True, text=True, timeout=10
    )
    assert result.returncode != 0
    assert "not a socket" in result.stderr
    assert path.read_text() == "keep me"


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    path = str(tmp_path / "nope" / "d.sock")
    result = subprocess.run(
        daemon_command("--backend", "memory", path), capture_output=True, text=True, timeout=10
    )
    assert result.returncode != 0
    assert "does not exist" in result.stderr


def test_socket_is_not_world_accessible(daemon_process: DaemonProcess) -> None:
    assert os.stat(daemon_process.path).st_mode & 0o777 == 0o660


def test_sync_client_survives_daemon_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "r.sock")
    first = DaemonProcess(path, "--backend", "memory").start()
    with DaemonClient(path) as client:
        client.create("vcan0")
        first.stop()
        second = DaemonProcess(path, "--backend", "memory").start()
        try:
            assert client.create("vcan0") == "vcan0 created"  # one transparent reconnect
        finally:
            second.stop()
        with pytest.raises(hycan.DaemonUnavailable):
            client.ping()


def test_unavailable_names_every_path_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hycan._paths.SYSTEM_SOCKET", "/nonexistent/system.sock")
    monkeypatch.setattr("hycan._paths.MANUAL_SOCKET", "/nonexistent/manual.sock")
    with pytest.raises(hycan.DaemonUnavailable) as info:
        Netlink("vcan0")
    message = str(info.value)
    assert "/nonexistent/system.sock" in message and "/nonexistent/manual.sock" in message
    assert "hycan-daemon" in message
    assert info.value.code == ErrorCode.DAEMON_UNAVAILABLE


def test_env_socket_is_used(daemon_process: DaemonProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYCAN_DAEMON_SOCKET", daemon_process.path)
    with DaemonClient() as client:
        assert client.socket_path == daemon_process.path
        assert client.ping()["backend"] == "memory"


def test_explicit_argument_beats_environment(
    daemon_process: DaemonProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYCAN_DAEMON_SOCKET", "/nonexistent/env.sock")
    with DaemonClient(daemon_process.path) as client:
        assert client.ping()["protocol"] == 1


def test_hung_daemon_times_out(tmp_path: Path) -> None:
    path = str(tmp_path / "hung.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()  # accepts (via backlog) but never answers
    try:
        with pytest.raises(hycan.Timeout), DaemonClient(path, timeout=0.3) as client:
            client.ping()
    finally:
        listener.close()
