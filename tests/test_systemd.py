"""Tests of hycan.daemon.systemd against real sockets and real child processes.

sd_notify goes to a datagram socket owned by the test; sd_listen_fds runs in a
child process (its fd 3 is set up there, so the test process's fds are never
touched), started either by a tiny script that plays systemd itself or by the
real ``systemd-socket-activate``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hycan.daemon import systemd

SRC = Path(__file__).resolve().parents[1] / "src"
TIMEOUT = 20


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a child interpreter that imports hycan from this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short private directory (AF_UNIX paths are limited to 107 bytes)."""
    path = Path(f"/tmp/hycan-sd-{uuid.uuid4().hex[:8]}")
    path.mkdir(mode=0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No NOTIFY_SOCKET / LISTEN_* inherited from whoever runs the tests."""
    for name in ("NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------- notify


@pytest.mark.usefixtures("clean_env")
def test_notify_without_notify_socket_returns_false(monkeypatch: pytest.MonkeyPatch) -> None:
    assert systemd.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert systemd.notify("READY=1") is False


@pytest.mark.usefixtures("clean_env")
def test_notify_sends_to_filesystem_socket(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(short_tmp / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(path)
        receiver.settimeout(TIMEOUT)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert systemd.notify("READY=1") is True
        assert receiver.recv(4096) == b"READY=1"
        assert systemd.notify("STOPPING=1\nSTATUS=shutting down") is True
        assert receiver.recv(4096) == b"STOPPING=1\nSTATUS=shutting down"


@pytest.mark.usefixtures("clean_env")
def test_notify_sends_to_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"hycan-test-notify-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(b"\0" + name.encode())
        receiver.settimeout(TIMEOUT)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("READY=1") is True
        assert receiver.recv(4096) == b"READY=1"


@pytest.mark.usefixtures("clean_env")
def test_notify_to_missing_socket_returns_false_and_logs(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(short_tmp / "nobody-listens"))
    with caplog.at_level(logging.WARNING, logger="hycan.daemon.systemd"):
        assert systemd.notify("READY=1") is False
    assert "READY=1" in caplog.text
    assert "nobody-listens" in caplog.text


@pytest.mark.usefixtures("clean_env")
def test_notify_to_stream_socket_returns_false(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(short_tmp / "stream")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as wrong:
        wrong.bind(path)
        wrong.listen()
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert systemd.notify("READY=1") is False


@pytest.mark.usefixtures("clean_env")
def test_notify_rejects_non_unix_address(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    with caplog.at_level(logging.WARNING, logger="hycan.daemon.systemd"):
        assert systemd.notify("READY=1") is False
    assert "vsock:2:1234" in caplog.text


# ------------------------------------------------- listen_fds, in this process


@pytest.mark.usefixtures("clean_env")
def test_listen_fds_without_environment_is_empty() -> None:
    assert systemd.listen_fds() == []


@pytest.mark.usefixtures("clean_env")
def test_listen_fds_for_another_pid_is_empty_and_unsets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # fds 3.. of this process are pytest's own: they must not be looked at.
    monkeypatch.setenv("LISTEN_PID", str(os.getppid()))
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_FDNAMES", "hycan")
    assert systemd.listen_fds() == []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        assert name not in os.environ


@pytest.mark.usefixtures("clean_env")
def test_listen_fds_can_keep_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getppid()))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert systemd.listen_fds(unset_environment=False) == []
    assert os.environ["LISTEN_PID"] == str(os.getppid())
    assert os.environ["LISTEN_FDS"] == "1"


@pytest.mark.usefixtures("clean_env")
def test_listen_fds_zero_for_us_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "0")
    assert systemd.listen_fds() == []
    assert "LISTEN_FDS" not in os.environ


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("pid", "fds", "message"),
    [
        ("abc", "1", "LISTEN_PID='abc' is not a process id"),
        ("SELF", "many", "LISTEN_FDS='many' is not a number"),
        ("SELF", "-1", "LISTEN_FDS='-1' is negative"),
    ],
)
def test_listen_fds_malformed_environment(
    monkeypatch: pytest.MonkeyPatch, pid: str, fds: str, message: str
) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()) if pid == "SELF" else pid)
    monkeypatch.setenv("LISTEN_FDS", fds)
    with pytest.raises(systemd.ListenFdError, match=message):
        systemd.listen_fds()
    assert "LISTEN_PID" not in os.environ  # unset on error too


def test_listen_fd_error_is_a_value_error() -> None:
    assert issubclass(systemd.ListenFdError, ValueError)


# ---------------------------------------- listen_fds in a child that plays systemd

# argv: KIND PATH. Puts a descriptor of the given KIND at fd 3 (and closes fd 4
# for "missing-second"), sets LISTEN_PID to its own pid like systemd does, calls
# listen_fds() and prints one JSON line describing the outcome. For a good
# socket it then accepts one connection and answers it, to prove it is real.
CHILD = r"""
import fcntl, json, os, socket, sys
from hycan.daemon import systemd

kind, path = sys.argv[1], sys.argv[2]
count = 1
if kind in ("unix-listening", "missing-second"):
    made = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    made.bind(path)
    made.listen()
    if kind == "missing-second":
        count = 2
elif kind == "unix-not-listening":
    made = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    made.bind(path)
elif kind == "unix-dgram":
    made = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    made.bind(path)
elif kind == "udp":
    made = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
elif kind == "regular-file":
    made = open(path, "w")
else:
    raise SystemExit("unknown kind " + kind)
os.dup2(made.fileno(), 3)  # inheritable, i.e. without FD_CLOEXEC, as systemd passes it
if kind == "missing-second":
    try:
        os.close(4)  # LISTEN_FDS=2 but nothing at fd 4
    except OSError:
        pass
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(count), LISTEN_FDNAMES="hycan")
env_names = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
try:
    socks = systemd.listen_fds()
except systemd.ListenFdError as exc:
    print(json.dumps({"error": str(exc), "env": [n for n in env_names if n in os.environ]}))
    sys.exit(0)
sock = socks[0]
print(json.dumps({
    "fds": [s.fileno() for s in socks],
    "family": sock.family.name,
    "type": sock.type.name,
    "cloexec": bool(fcntl.fcntl(3, fcntl.F_GETFD) & fcntl.FD_CLOEXEC),
    "env": [n for n in env_names if n in os.environ],
}), flush=True)
conn, _ = sock.accept()
with conn:
    request = conn.makefile("rb").readline()
    conn.sendall(b"pong " + request)
"""


def run_child(kind: str, path: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start the CHILD script and return it with its parsed report line."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, kind, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        _, err = proc.communicate(timeout=TIMEOUT)
        pytest.fail(f"child printed nothing; stderr:\n{err}")
    report: dict[str, Any] = json.loads(line)
    return proc, report


def finish(proc: subprocess.Popen[str]) -> None:
    """Wait for a child that is expected to exit on its own."""
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("child did not exit")
    assert proc.returncode == 0, err


def ping(path: Path) -> bytes:
    """One request/answer exchange over a connected AF_UNIX stream socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(TIMEOUT)
        client.connect(str(path))
        client.sendall(b"ping\n")
        return client.makefile("rb").readline()


def test_listen_fds_takes_listening_unix_socket_in_child(short_tmp: Path) -> None:
    path = short_tmp / "sock"
    proc, report = run_child("unix-listening", path)
    try:
        assert report == {
            "fds": [3],
            "family": "AF_UNIX",
            "type": "SOCK_STREAM",
            "cloexec": True,
            "env": [],
        }
        # The child's report comes after listen(): connecting cannot race it.
        assert ping(path) == b"pong ping\n"
    finally:
        finish(proc)


WANTED = "expected a listening AF_UNIX SOCK_STREAM socket"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("udp", f"fd 3 passed by systemd (LISTEN_FDS) is an AF_INET SOCK_DGRAM socket, {WANTED}"),
        (
            "unix-dgram",
            f"fd 3 passed by systemd (LISTEN_FDS) is an AF_UNIX SOCK_DGRAM socket, {WANTED}",
        ),
        ("regular-file", f"fd 3 passed by systemd (LISTEN_FDS) is a regular file, {WANTED}"),
        (
            "unix-not-listening",
            "fd 3 passed by systemd (LISTEN_FDS) is an AF_UNIX SOCK_STREAM socket "
            "that is not listening",
        ),
        ("missing-second", "fd 4 passed by systemd (LISTEN_FDS) is not open"),
    ],
)
def test_listen_fds_rejects_wrong_descriptor(short_tmp: Path, kind: str, expected: str) -> None:
    proc, report = run_child(kind, short_tmp / "thing")
    finish(proc)
    assert expected in report["error"]
    assert report["env"] == []  # LISTEN_* are unset on error too


# ------------------------------------------- listen_fds under systemd-socket-activate

SOCKET_ACTIVATED_CHILD = r"""
import json, os, sys
from hycan.daemon import systemd

names = os.environ.get("LISTEN_FDNAMES")
socks = systemd.listen_fds()
conn, _ = socks[0].accept()
with conn:
    request = conn.makefile("rb").readline()
    answer = {
        "request": request.decode(),
        "count": len(socks),
        "fd": socks[0].fileno(),
        "names": names,
        "env_left": sorted(k for k in os.environ if k.startswith("LISTEN_")),
    }
    conn.sendall(json.dumps(answer).encode() + b"\n")
"""


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None,
    reason="systemd-socket-activate not installed (apt-get install systemd)",
)
def test_listen_fds_under_systemd_socket_activate(short_tmp: Path) -> None:
    path = short_tmp / "activated.sock"
    proc = subprocess.Popen(
        [
            "systemd-socket-activate",
            "--listen",
            str(path),
            "--fdname",
            "hycan",
            sys.executable,
            "-c",
            SOCKET_ACTIVATED_CHILD,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        assert proc.stderr is not None
        # It announces "Listening on <path> as 3." once the socket listens.
        line = proc.stderr.readline()
        assert "Listening on" in line, line
        answer = json.loads(ping(path))
        assert answer == {
            "request": "ping\n",
            "count": 1,
            "fd": 3,
            "names": "hycan",
            "env_left": [],
        }
    finally:
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
