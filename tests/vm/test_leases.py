"""Owners, leases and quotas with real vcans on a Debian kernel (inside the VM)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import DaemonProcess
from tests.identities import Identities, Identity, run_as

import hycan
from hycan import DaemonClient

pytestmark = pytest.mark.vcan


def exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def alias(name: str) -> str:
    out = subprocess.run(["ip", "-o", "link", "show", name], capture_output=True, text=True)
    return out.stdout.partition(" alias ")[2].strip()


def start(shared_dir: Path, ids: Identities, *extra: str) -> DaemonProcess:
    return DaemonProcess(
        str(shared_dir / "hycan.sock"), "--backend", "netlink", "--group", ids.group, *extra
    ).start()


@pytest.fixture
def daemon(shared_dir: Path, identities: Identities) -> Iterator[DaemonProcess]:
    proc = start(shared_dir, identities, "--max-links-per-uid", "3")
    yield proc
    proc.stop()


def leasing_child(who: Identity, path: str, names: list[str]) -> tuple[int, int]:
    """A process of ``who`` that leases ``names`` and then waits; (pid, fd to read "ok")."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups(list(who.groups))
            os.setresgid(who.gid, who.gid, who.gid)
            os.setresuid(who.uid, who.uid, who.uid)
            client = DaemonClient(path)
            for name in names:
                client.create_vcan(name, lease=True)
            os.write(ready_w, b"ok")
            signal.pause()
        finally:
            os._exit(1)
    os.close(ready_w)
    return pid, ready_r


def test_a_sigkilled_clients_leased_vcans_are_gone_within_a_second(
    daemon: DaemonProcess, identities: Identities
) -> None:
    names = ["lease0", "lease1"]
    pid, ready = leasing_child(identities.member, daemon.path, names)
    try:
        assert os.read(ready, 2) == b"ok"
        assert all(exists(n) for n in names)
        assert alias("lease0").startswith(f"hycan owner={identities.member.uid} lease=")
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        while any(exists(n) for n in names):
            assert time.monotonic() - killed < 1.0, "leased vcans outlived their client by 1 s"
            time.sleep(0.001)  # the measured quantity: polled, not a synchronisation
        gone = time.monotonic() - killed
        print(f"\nSIGKILL -> leased vcans gone: {gone * 1000:.1f} ms")
    finally:
        os.close(ready)
        subprocess.run(["ip", "link", "del", "lease0"], capture_output=True)
        subprocess.run(["ip", "link", "del", "lease1"], capture_output=True)
    _, log = daemon.stop()
    assert "event=lease-end" in log and "name=lease0" in log and "result=deleted" in log


def test_a_restarted_daemon_deletes_the_leases_of_the_one_that_died(
    shared_dir: Path, identities: Identities
) -> None:
    first = start(shared_dir, identities)
    pid, ready = leasing_child(identities.member, first.path, ["orphan0"])
    try:
        assert os.read(ready, 2) == b"ok"
        run_as(identities.member, lambda: DaemonClient(first.path).create("kept0"))
        first.stop(signal.SIGKILL)  # the daemon dies with the lease still open
        assert exists("orphan0")
        second = start(shared_dir, identities)
        try:
            assert not exists("orphan0")
            assert exists("kept0") and alias("kept0") == f"hycan owner={identities.member.uid}"
        finally:
            _, log = second.stop()
        assert "deleted orphan0: leased by a hycan-daemon that is gone" in log
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready)
        for name in ("orphan0", "kept0"):
            subprocess.run(["ip", "link", "del", name], capture_output=True)


def test_owners_and_quotas_with_real_vcans(daemon: DaemonProcess, identities: Identities) -> None:
    member, other = identities.member, identities.member2

    def create(*names: str) -> list[str]:
        with DaemonClient(daemon.path) as client:
            return [client.create(n) for n in names]

    try:
        assert run_as(member, lambda: create("own0", "own1", "own2"))[0] == "own0 created"
        assert alias("own0") == f"hycan owner={member.uid}"
        with pytest.raises(hycan.DaemonBusy, match="may own at most 3"):
            run_as(member, lambda: create("own3"))
        assert not exists("own3")

        def meddle() -> None:
            with DaemonClient(daemon.path) as client:
                client.delete("own0")

        with pytest.raises(hycan.PermissionDenied, match=f"belongs to uid {member.uid}"):
            run_as(other, meddle)
        assert exists("own0")
        run_as(member, meddle)
        assert not exists("own0")
        assert run_as(member, lambda: create("own3")) == ["own3 created"]
    finally:
        for name in ("own0", "own1", "own2", "own3"):
            subprocess.run(["ip", "link", "del", name], capture_output=True)


def test_hycan_lease_runs_a_command_on_its_own_vcan(daemon: DaemonProcess) -> None:
    script = (
        "import os, socket\n"
        "s = socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW)\n"
        "s.bind((os.environ['HYCAN_VCAN'],))\n"
        "s.send(bytes(16))\n"
        "print(os.environ['HYCAN_VCAN'])\n"
    )
    ran = subprocess.run(
        [sys.executable, "-m", "hycan.cli", "--socket", daemon.path, "lease", "--vcan", "job0",
         "--classic", "--", sys.executable, "-c", script],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "job0"  # a frame went out on it, as a classic CAN link
    assert not exists("job0")
