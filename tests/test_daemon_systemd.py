"""hycan-daemon under systemd's protocols: socket activation and sd_notify, end to end."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hycan import DaemonClient
from tests.conftest import daemon_command


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A test-owned NOTIFY_SOCKET, as systemd would provide it."""
    path = str(tmp_path / "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(20)
    yield receiver, path
    receiver.close()


def test_ready_only_once_serving_and_stopping_on_sigterm(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    receiver, notify_path = notify_socket
    sock = str(tmp_path / "d.sock")
    env = {**os.environ, "NOTIFY_SOCKET": notify_path}
    proc = subprocess.Popen(
        daemon_command("--backend", "memory", sock),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert receiver.recv(4096) == b"READY=1"
        # READY=1 means serving: the very next request is answered, no retry needed.
        with DaemonClient(sock) as client:
            assert client.ping()["backend"] == "memory"
        proc.send_signal(signal.SIGTERM)
        assert receiver.recv(4096) == b"STOPPING=1"
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None,
    reason="systemd-socket-activate not installed (apt-get install systemd)",
)
@pytest.mark.parametrize("extra", [(), ("--allow-uid", "4242")])
def test_socket_activated_daemon_serves_clients(tmp_path: Path, extra: tuple[str, ...]) -> None:
    sock = tmp_path / "activated.sock"
    daemon = daemon_command("--backend", "memory", *extra)
    proc = subprocess.Popen(
        ["systemd-socket-activate", "--listen", str(sock), *daemon],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert "Listening on" in proc.stderr.readline()  # systemd-socket-activate owns it
        with DaemonClient(str(sock), timeout=20) as client:  # the first connect starts us
            client.create("vcan0")
            assert client.status("vcan0").kind == "vcan"
        assert proc.stdout is not None
        assert f"serving on {sock}" in proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        # The socket belonged to the activator, not to the daemon: the daemon left it alone.
        # It cannot give systemd's socket an ACL entry for --allow-uid: it says so.
        warned = "--allow-uid 4242: systemd owns the socket" in proc.stderr.read()
        assert warned == bool(extra)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
