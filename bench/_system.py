"""Processes, CPU pinning, network namespaces and the machine description."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

READY_MARK = "serving on"
_STARTUP_CPUS = sorted(os.sched_getaffinity(0))  # before any pinning of our own


def allowed_cpus() -> list[int]:
    """The CPUs this process was allowed to run on when it started, sorted."""
    return list(_STARTUP_CPUS)


def machine_info() -> dict[str, Any]:
    """What the table ran on: CPUs, CPU model, kernel, Python."""
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    from hycan import __version__

    return {
        "nproc": os.cpu_count(),
        "cpus_allowed": allowed_cpus(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "hycan": __version__,
        "euid": os.geteuid(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


@dataclass(frozen=True, slots=True)
class Mode:
    """Where the client and the server run for one latency measurement."""

    name: str
    client: frozenset[int] | None  # None: not pinned
    server: frozenset[int] | None
    description: str


def latency_modes(requested: Sequence[str]) -> tuple[list[Mode], list[str]]:
    """The pinning modes this machine supports, plus a note for each one it cannot do.

    ``pinned``: client and server both pinned to one CPU (``taskset``), as the issue asks;
    ``split``: client on one CPU, server on another; ``unpinned``: the scheduler decides.
    """
    cpus = allowed_cpus()
    have_taskset = shutil.which("taskset") is not None
    modes: list[Mode] = []
    notes: list[str] = []
    for name in requested:
        if name == "unpinned":
            modes.append(Mode(name, None, None, "no pinning"))
        elif not have_taskset:
            notes.append(f"{name}: skipped, taskset is not installed")
        elif name == "pinned":
            cpu = frozenset({cpus[-1]})
            modes.append(Mode(name, cpu, cpu, f"client and server on CPU {cpus[-1]}"))
        elif name == "split":
            if len(cpus) < 2:
                notes.append("split: skipped, only one CPU is available")
                continue
            modes.append(
                Mode(
                    name,
                    frozenset({cpus[0]}),
                    frozenset({cpus[-1]}),
                    f"client on CPU {cpus[0]}, server on CPU {cpus[-1]}",
                )
            )
        else:
            raise ValueError(f"unknown pinning mode {name!r}")
    return modes, notes


def _cpu_list(cpus: frozenset[int] | None) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus if cpus is not None else allowed_cpus()))


def pin_self(cpus: frozenset[int] | None) -> None:
    """Pin every thread of this process (``None``: all allowed CPUs again)."""
    target = set(cpus) if cpus is not None else set(allowed_cpus())
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), target)


def pin_process(pid: int, cpus: frozenset[int] | None) -> None:
    """``taskset -a -p -c LIST PID``: pin every thread of another process."""
    subprocess.run(
        ["taskset", "-a", "-p", "-c", _cpu_list(cpus), str(pid)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


class Service:
    """A server subprocess that prints a line containing "serving on" once it accepts."""

    def __init__(self, name: str, argv: Sequence[str], log_path: str) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None

    @property
    def pid(self) -> int:
        """The server's pid (``ip netns exec`` execs, so this is the server itself)."""
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> Service:
        """Start and wait for the ready line; on failure raise with the server's log."""
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while READY_MARK not in line:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(remaining, 0))
            line = self.proc.stdout.readline() if ready else ""
            if not ready or (not line and self.proc.poll() is not None):
                self.stop()
                raise RuntimeError(f"{self.name} did not start: {self.log_tail()}")
        return self

    def log_tail(self, lines: int = 5) -> str:
        """The last lines the server wrote on stderr."""
        with contextlib.suppress(OSError), open(self.log_path, encoding="utf-8") as log:
            return " | ".join(log.read().strip().splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; idempotent."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            reap(self.proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None


def reap(proc: subprocess.Popen[str], timeout: float) -> None:
    """Wait for ``proc`` to exit (after it was told to), SIGKILL it after ``timeout``;
    close our end of its stdout."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
    if proc.stdout is not None:
        with contextlib.suppress(OSError, ValueError):
            proc.stdout.close()


def listen_unix(path: str, backlog: int) -> socket.socket:
    """A listening AF_UNIX stream socket on ``path`` (a leftover file there is replaced)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(backlog)
    return sock


@contextlib.contextmanager
def services() -> Iterator[list[Service]]:
    """A list to register started services in; every one is stopped on exit."""
    started: list[Service] = []
    try:
        yield started
    finally:
        for service in reversed(started):
            service.stop()


def python_module(module: str, *args: str) -> list[str]:
    """argv running ``module`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def netns_unavailable() -> str | None:
    """Why the netlink part cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root to create a network namespace (run as root, e.g. in CI)"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`) to create a network namespace"
    return None


@contextlib.contextmanager
def throwaway_netns() -> Iterator[str]:
    """A fresh netns holding the veth pair veth0/veth1 (both down); always deleted."""
    name = f"hycan-bench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(
            ["ip", "-n", name, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1"],
            check=True,
        )
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)
