"""Shared fixtures: an in-process daemon (memory backend), daemon subprocesses, netns."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from hycan._handler import Handler
from hycan.backends.memory import MemoryBackend
from hycan.daemon.audit import audit_logger
from hycan.daemon.listener import bind_unix
from hycan.daemon.policy import Policy, Rules
from hycan.daemon.server import Server

pytest_plugins = ["tests.identities"]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may find a real daemon or fall back to the host's netlink by accident."""
    monkeypatch.delenv("HYCAN_DAEMON_SOCKET", raising=False)
    monkeypatch.setenv("HYCAN_NO_FALLBACK", "1")


@dataclass
class InProcessDaemon:
    """A daemon served by this test's trio loop."""

    path: str
    backend: MemoryBackend
    server: Server


@pytest.fixture
def audit_at_info() -> Iterator[None]:
    """The audit log writes INFO lines (changes and failures), as hycan-daemon's does."""
    level = audit_logger.level
    audit_logger.setLevel(logging.INFO)
    yield
    audit_logger.setLevel(level)


@pytest.fixture
async def daemon(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[InProcessDaemon]:
    """A memory-backend daemon on a private socket, served in the test's nursery."""
    path = str(tmp_path / "hycan.sock")
    backend = MemoryBackend()
    # As `hycan-daemon --backend memory --allow-iface '*'`: every link may be changed.
    policy = Policy(Rules.defaults(["*"]))
    server = Server(Handler(backend, backend_name="memory", policy=policy))
    bound = bind_unix(path)
    await nursery.start(server.serve, bound.sock)
    yield InProcessDaemon(path, backend, server)
    bound.remove()


def daemon_command(*args: str) -> list[str]:
    """The daemon as a subprocess of this interpreter; with the built-in policy unless the
    test names one (a host's /etc/hycan/policy.toml must not change what tests see)."""
    policy = () if any(a.startswith("--policy") for a in args) else ("--policy=",)
    return [sys.executable, "-m", "hycan.daemon.main", *policy, *args]


class DaemonProcess:
    """A ``hycan-daemon`` subprocess; ``start()`` returns once its ready line is printed.

    Its stderr (the log) goes to a file, so a chatty daemon never blocks on a full pipe.
    """

    def __init__(self, path: str, *args: str, prefix: tuple[str, ...] = ()) -> None:
        self.path = path
        self.argv = [*prefix, *daemon_command("--socket", path, *args)]
        self.proc: subprocess.Popen[str] | None = None
        self.ready_line = ""
        self._log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (lives as long as self)

    def start(self) -> DaemonProcess:
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self.proc.stdout is not None
        self.ready_line = self.proc.stdout.readline()
        if "serving on" not in self.ready_line:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise RuntimeError(f"daemon did not start: {self.ready_line!r} {self.log()}")
        return self

    def log(self) -> str:
        """Everything the daemon logged so far."""
        self._log.seek(0)
        return self._log.read()

    def stop(self, sig: int = 15, timeout: float = 10) -> tuple[int, str]:
        """Signal the daemon and return (exit status, its log)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return self.proc.returncode, self.log()


@pytest.fixture
def daemon_process(tmp_path: Path) -> Iterator[DaemonProcess]:
    """A memory-backend daemon subprocess on a private socket, stopped afterwards."""
    proc = DaemonProcess(str(tmp_path / "hycan.sock"), "--backend", "memory").start()
    yield proc
    proc.stop()


@dataclass
class Netns:
    """A throwaway network namespace holding a veth pair ``veth0``/``veth1`` (both down)."""

    name: str

    def ip(self, *args: str) -> str:
        return subprocess.run(
            ["ip", "-n", self.name, *args], check=True, capture_output=True, text=True
        ).stdout

    def python(
        self,
        script: str,
        env: dict[str, str] | None = None,
        timeout: float = 120,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a Python script inside this netns with this interpreter."""
        return subprocess.run(
            ["ip", "netns", "exec", self.name, sys.executable, "-c", script],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )

    def link_is_up(self, link: str) -> bool:
        flags = self.ip("-o", "link", "show", link).split("<", 1)[1].split(">", 1)[0]
        return "UP" in flags.split(",")


@pytest.fixture
def netns() -> Iterator[Netns]:
    """Create a netns with a veth pair; always deleted, even when the test fails."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to create a network namespace (CI runs as root)")
    name = f"hycan-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        ns = Netns(name)
        ns.ip("link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def group_daemon(netns: Netns, socket_dir: Path, group: str, *extra: str) -> DaemonProcess:
    """The netlink daemon inside ``netns`` admitting ``group``, on a socket in
    ``socket_dir`` (started; the caller stops it)."""
    return DaemonProcess(
        str(socket_dir / "hycan.sock"),
        "--backend",
        "netlink",
        "--group",
        group,
        *extra,
        prefix=("ip", "netns", "exec", netns.name),
    ).start()


@pytest.fixture
def netns_daemon(netns: Netns, tmp_path: Path) -> Iterator[DaemonProcess]:
    """The netlink daemon inside ``netns``, allowed to toggle the veth pair."""
    proc = DaemonProcess(
        str(tmp_path / "ns.sock"),
        "--backend",
        "netlink",
        "--allow-iface",
        "veth*",
        prefix=("ip", "netns", "exec", netns.name),
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A socket directory every throwaway user can reach (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="hycan-shared-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()
