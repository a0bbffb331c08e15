"""Network namespaces passed by descriptor, on a real kernel (root, throwaway netns and users).

The daemon runs in a throwaway netns; members make their own sandboxes with ``unshare``
(user + network namespace), as rootless containers do. The host kernel has no vcan, so
creating one there ends in the kernel's "not supported": enough to show the request got
there; the VM tests create real vcans and vxcans in sandboxes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import hycan
from hycan import DaemonClient
from hycan._netns import rights
from hycan._protocol import Op, encode_request
from tests.conftest import DaemonProcess, Netns, group_daemon
from tests.identities import Identities, Identity, become, run_as

pytestmark = pytest.mark.netns


@pytest.fixture
def daemon(netns: Netns, shared_dir: Path, identities: Identities) -> Iterator[DaemonProcess]:
    proc = group_daemon(netns, shared_dir, identities.group)
    yield proc
    proc.stop()


def sandbox_of(who: Identity) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["unshare", "--user", "--net", "--map-current-user", "sleep", "300"],
        preexec_fn=lambda: become(who),  # noqa: PLW1509 (no threads run here)
    )
    deadline = time.monotonic() + 10
    while os.readlink(f"/proc/{proc.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
        assert time.monotonic() < deadline, "unshare made no namespace"
        time.sleep(0.01)
    return proc


@pytest.fixture
def sandbox(identities: Identities) -> Iterator[subprocess.Popen[bytes]]:
    proc = sandbox_of(identities.member)
    yield proc
    proc.kill()
    proc.wait()


def daemon_fds(daemon: DaemonProcess) -> int:
    assert daemon.proc is not None
    pid = int(subprocess.check_output(["pgrep", "-f", "-n", f"hycan.*{daemon.path}"]))
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_member_acts_in_its_own_sandbox(
    daemon: DaemonProcess, identities: Identities, sandbox: subprocess.Popen[bytes]
) -> None:
    netns = f"/proc/{sandbox.pid}/ns/net"

    def look() -> tuple[list[str], bool, str]:
        with DaemonClient(daemon.path) as client:
            names = [entry.name for entry in client.list_links(netns=netns)]
            lo = client.status("lo", netns=netns)
            try:
                client.create_vcan("vc0", netns=netns, up=True)
            except hycan.NotSupported as exc:
                return names, bool(lo.exists and lo.up is False), exc.message
            return names, bool(lo.exists), "created"

    names, lo_down, created = run_as(identities.member, look)
    assert names == ["lo"]  # the sandbox's links, not the daemon's veth pair
    assert lo_down  # a new namespace's lo is down
    assert "vcan kernel module is not loaded" in created  # the kernel was asked, there


def test_another_members_sandbox_and_other_files_are_refused(
    daemon: DaemonProcess,
    identities: Identities,
    sandbox: subprocess.Popen[bytes],
    netns: Netns,
) -> None:
    before = daemon_fds(daemon)
    fd = os.open(f"/proc/{sandbox.pid}/ns/net", os.O_RDONLY)  # root can open it; member2 not
    try:

        def enter(target: int | str) -> str:
            with DaemonClient(daemon.path) as client:
                return repr(client.list_links(netns=target))

        with pytest.raises(hycan.PermissionDenied, match=r"made by uid \d+"):
            run_as(identities.member2, lambda: enter(fd))
        with pytest.raises(hycan.InvalidArgument, match="not a namespace"):
            run_as(identities.member2, lambda: enter("/dev/null"))
        with pytest.raises(hycan.InvalidArgument, match="not a network namespace"):
            run_as(identities.member2, lambda: enter("/proc/self/ns/user"))
        # the daemon's own namespace is simply where it acts anyway
        assert run_as(identities.member2, lambda: enter(f"/run/netns/{netns.name}")) == "[]"
        # one an admin made (`ip netns add`) belongs to the initial user namespace: refused
        other = f"{netns.name}-x"
        subprocess.run(["ip", "netns", "add", other], check=True)
        try:
            with pytest.raises(hycan.PermissionDenied, match="initial user namespace"):
                run_as(identities.member2, lambda: enter(f"/run/netns/{other}"))
        finally:
            subprocess.run(["ip", "netns", "delete", other], check=False)
    finally:
        os.close(fd)
    assert daemon_fds(daemon) == before  # every passed descriptor was closed again


def test_descriptors_sent_with_other_requests_are_closed(daemon: DaemonProcess) -> None:
    """A client that sends descriptors with every request cannot fill the daemon's table."""
    before = daemon_fds(daemon)
    ping = encode_request(Op.PING, b"")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(daemon.path)
        null = os.open("/dev/null", os.O_RDONLY)
        try:
            for _ in range(200):
                sock.sendmsg([ping], rights(null) * 3)  # three per message
                assert sock.recv(4096)[:1] == b"\x01"
            during = daemon_fds(daemon)
        finally:
            os.close(null)
    assert during <= before + 1  # the connection itself


class _Counting:
    """A netlink socket that counts the requests sent on it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.sent = sock, 0

    def send(self, data: bytes) -> int:
        self.sent += 1
        return self.sock.send(data)

    def recv(self, size: int, flags: int = 0) -> bytes:
        return self.sock.recv(size, flags)

    def close(self) -> None:
        self.sock.close()


def test_each_namespace_operation_is_one_netlink_request(sandbox: subprocess.Popen[bytes]) -> None:
    """The daemon never waits on a namespace for more than one kernel round trip per step:
    entering costs two (assign and read the netnsid), every later step one."""
    from hycan._netns import classify
    from hycan.backends.netlink import NetlinkBackend

    fd = os.open(f"/proc/{sandbox.pid}/ns/net", os.O_RDONLY)
    host = NetlinkBackend()
    try:
        there = host.for_netns(classify(fd, 0))
        counting = _Counting(there._sock)
        there._sock = counting  # type: ignore[assignment]
        steps = {
            "status": lambda: there.status("lo"),
            "resolve": lambda: there.resolve("lo"),
            "links": there.links,
            "missing": lambda: there.status("vc0"),
        }
        for name, step in steps.items():
            before = counting.sent
            step()
            assert counting.sent - before == 1, name
        there.close()
    finally:
        host.close()
        os.close(fd)
