"""CAN for sandboxes and containers on a Debian kernel (inside the VM): links in a member's
own network namespace, vxcan pairs, CAN gateway routes and ``hycan run``.

Every test runs the member's side as the member (an unprivileged uid in the daemon's
group), in user namespaces it makes itself (``unshare``), as a rootless container would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import DaemonProcess
from tests.identities import Identities, Identity, become, run_as

import hycan
from hycan import DaemonClient
from hycan.backends import _cangw

pytestmark = pytest.mark.vcan
CAN_FRAME = struct.Struct("=IB3x8s")
# A program for the sandbox: send 0x123 on $1, then wait for 0x321 (exit 0) for 10 s.
PING_PONG = """
import socket, struct, sys
s = socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW)
s.bind((sys.argv[1],))
s.settimeout(10)
s.send(struct.pack("=IB3x8s", 0x123, 2, b"hi"))
while True:
    can_id, _, data = struct.unpack("=IB3x8s", s.recv(16))
    if can_id == 0x321:
        sys.exit(0 if data[:2] == b"ok" else 3)
"""
# Frames in one's own vcan: a raw socket sees its own frame with RECV_OWN_MSGS.
LOOPBACK = """
import socket, struct, sys
s = socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW)
s.setsockopt(socket.SOL_CAN_RAW, socket.CAN_RAW_RECV_OWN_MSGS, 1)
s.bind((sys.argv[1],))
s.settimeout(10)
s.send(struct.pack("=IB3x8s", 0x42, 1, b"x"))
can_id, _, _ = struct.unpack("=IB3x8s", s.recv(16))
sys.exit(0 if can_id == 0x42 else 3)
"""


def links() -> set[str]:
    return {name for _, name in socket.if_nameindex()}


def as_user(who: Identity) -> dict[str, object]:
    """Popen keywords that run the child as ``who``."""
    return {"preexec_fn": lambda: become(who)}


@pytest.fixture(autouse=True, scope="module")
def _gateway_module() -> None:
    """The kernel does not load can-gw on demand; hycan's modules-load.d file does at boot."""
    subprocess.run(["modprobe", "-a", "can-gw", "vxcan"], check=True)


@pytest.fixture
def daemon(shared_dir: Path, identities: Identities) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(
        str(shared_dir / "hycan.sock"), "--backend", "netlink", "--group", identities.group
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
def hub() -> Iterator[str]:
    """A vcan nobody owns (an admin's shared bus): members may route to it by default."""
    subprocess.run(["ip", "link", "add", "hub0", "type", "vcan"], check=True)
    subprocess.run(["ip", "link", "set", "hub0", "up"], check=True)
    yield "hub0"
    subprocess.run(["ip", "link", "del", "hub0"], check=False)


@pytest.fixture
def sandbox(identities: Identities) -> Iterator[subprocess.Popen[bytes]]:
    """A member's rootless sandbox: a process in its own user + network namespace."""
    proc = subprocess.Popen(
        ["unshare", "--user", "--net", "--map-current-user", "sleep", "300"],
        **as_user(identities.member),  # type: ignore[call-overload]
    )
    netns = f"/proc/{proc.pid}/ns/net"
    deadline = time.monotonic() + 10
    while os.readlink(netns) == os.readlink("/proc/self/ns/net"):
        assert time.monotonic() < deadline, "unshare did not make a namespace"
        time.sleep(0.01)
    yield proc
    proc.kill()
    proc.wait()


def in_netns(pid: int, *cmd: str) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` as root inside process ``pid``'s network namespace."""
    return subprocess.run(
        ["nsenter", "-t", str(pid), "-n", *cmd], capture_output=True, text=True, timeout=30
    )


def hycan_cli(who: Identity, socket_path: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hycan.cli", "--socket", socket_path, "--timeout", "20", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **as_user(who),  # type: ignore[call-overload]
    )


def test_a_member_gets_a_vcan_in_its_sandbox_and_frames_cross_it(
    daemon: DaemonProcess, identities: Identities, sandbox: subprocess.Popen[bytes]
) -> None:
    netns = f"/proc/{sandbox.pid}/ns/net"

    def create() -> str:
        with DaemonClient(daemon.path, timeout=20) as client:
            return client.create_vcan("vc0", netns=netns, up=True)

    assert run_as(identities.member, create) == "vc0 created (up)"
    assert "vc0" not in links()  # it is in the sandbox, not here
    shown = in_netns(sandbox.pid, "ip", "-d", "link", "show", "vc0")
    assert "vcan" in shown.stdout and "state UNKNOWN" in shown.stdout, shown
    sent = in_netns(sandbox.pid, sys.executable, "-c", LOOPBACK, "vc0")
    assert sent.returncode == 0, sent.stderr


def test_refusals_leave_nothing_behind(
    daemon: DaemonProcess, identities: Identities, sandbox: subprocess.Popen[bytes]
) -> None:
    before = links()
    netns = f"/proc/{sandbox.pid}/ns/net"
    fd = os.open(netns, os.O_RDONLY)  # root opens it: member2 holds an fd it could not open
    try:

        def others_namespace() -> str:
            with DaemonClient(daemon.path, timeout=20) as client:
                return client.create_vcan("vc9", netns=fd)

        with pytest.raises(hycan.PermissionDenied, match="made by uid"):
            run_as(identities.member2, others_namespace)
    finally:
        os.close(fd)

    def not_a_namespace() -> str:
        with DaemonClient(daemon.path, timeout=20) as client:
            return client.create_vcan("vc9", netns="/proc/self/ns/user")

    with pytest.raises(hycan.InvalidArgument, match="not a network namespace"):
        run_as(identities.member, not_a_namespace)
    subprocess.run(["ip", "link", "add", "other0", "type", "vcan"], check=True)
    subprocess.run(
        ["ip", "link", "set", "other0", "alias", f"hycan owner={identities.member2.uid}"]
    )
    try:

        def route_to_anothers() -> str:
            with DaemonClient(daemon.path, timeout=20) as client:
                client.create_vxcan("vc9", peer="vxh9", netns=netns, lease=True)
                return client.add_route("vxh9", "other0")

        with pytest.raises(hycan.PermissionDenied, match="belongs to"):
            run_as(identities.member, route_to_anothers)
    finally:
        subprocess.run(["ip", "link", "del", "other0"], check=False)
    assert links() == before
    assert "vc9" not in in_netns(sandbox.pid, "ip", "link").stdout
    with DaemonClient(daemon.path) as root:
        assert root.routes() == []


def test_hycan_run_routes_a_vxcan_to_a_host_vcan_and_cleans_up(
    daemon: DaemonProcess, identities: Identities, hub: str
) -> None:
    host = socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW)
    host.bind((hub,))
    host.settimeout(30)
    before = links()
    run = hycan_cli(
        identities.member, daemon.path, "run", "--vxcan", f"vc0={hub}", "--",
        sys.executable, "-c", PING_PONG, "vc0",
    )  # fmt: skip
    try:
        try:
            can_id, _, data = CAN_FRAME.unpack(host.recv(16))  # the sandbox's frame arrived
        except TimeoutError:
            run.kill()
            pytest.fail(f"no frame from the sandbox: {run.communicate()}")
        assert (can_id, data[:2]) == (0x123, b"hi")
        with DaemonClient(daemon.path) as root:
            routes = root.routes()
        (there,) = [r for r in routes if r.dst == hub]
        (back,) = [r for r in routes if r.src == hub]
        assert there.src.startswith("hyx") and back.dst == there.src
        assert there.owner == identities.member.uid and there.lease
        if shutil.which("cangw"):  # our rtcanmsg against can-utils' reading of the kernel
            listed = subprocess.run(["cangw", "-L"], capture_output=True, text=True).stdout
            assert f"-s {there.src} -d {hub} -e" in listed, listed
            assert f"-s {hub} -d {there.src} -e" in listed, listed
        host.send(CAN_FRAME.pack(0x321, 2, b"ok"))
        out, err = run.communicate(timeout=60)
    finally:
        run.kill()
        host.close()
    assert run.returncode == 0, (out, err)
    assert links() == before  # the vxcan's host end went with the command
    with DaemonClient(daemon.path) as root:
        assert root.routes() == []


def test_hycan_run_cleans_up_after_its_command_is_sigkilled(
    daemon: DaemonProcess, identities: Identities, hub: str
) -> None:
    before = links()
    run = hycan_cli(
        identities.member, daemon.path, "run", "--vcan", "vc1", "--vxcan", f"vc0={hub}", "--",
        "sh", "-c", "cat /proc/net/dev; echo ready; exec sleep 300",
    )  # fmt: skip
    try:
        assert run.stdout is not None
        listed = "".join(iter(run.stdout.readline, "ready\n"))
        assert "vc0:" in listed and "vc1:" in listed, listed
        command = int(subprocess.check_output(["pgrep", "-P", str(run.pid)], text=True))
        os.kill(command, signal.SIGKILL)
        run.wait(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 128 + signal.SIGKILL
    assert links() == before
    with DaemonClient(daemon.path) as root:
        assert root.routes() == []


def test_route_messages_match_the_kernel_byte_for_byte() -> None:
    """An RTM_NEWROUTE we encode is what the kernel dumps back (the counters aside)."""
    subprocess.run(["ip", "link", "add", "gwa", "type", "vcan"], check=True)
    subprocess.run(["ip", "link", "add", "gwb", "type", "vcan"], check=True)
    try:
        from hycan.backends.base import Route
        from hycan.backends.netlink import NetlinkBackend

        backend = NetlinkBackend()
        src, dst = (socket.if_nametoindex(n) for n in ("gwa", "gwb"))
        route = Route(src, dst, 0x123, 0x800007FF, fd=False)
        backend.add_route(route)
        (seen,) = backend.routes()
        assert seen.same_job(route)
        if shutil.which("cangw"):
            listed = subprocess.run(["cangw", "-L"], capture_output=True, text=True).stdout
            assert "cangw -A -s gwa -d gwb -e -f 123:800007FF #" in listed, listed
        backend.delete_route(route)
        assert backend.routes() == []
        with pytest.raises(ValueError, match="both interfaces"):
            _cangw.encode(25, Route(0, 0), 1)  # never "flush every job"
        backend.close()
    finally:
        subprocess.run(["ip", "link", "del", "gwa"], check=False)
        subprocess.run(["ip", "link", "del", "gwb"], check=False)


def test_list_and_status_in_the_sandbox(
    daemon: DaemonProcess, identities: Identities, sandbox: subprocess.Popen[bytes]
) -> None:
    netns = f"/proc/{sandbox.pid}/ns/net"

    def look() -> tuple[list[str], str]:
        with DaemonClient(daemon.path, timeout=20) as client:
            client.create_vxcan("vc2", peer="vxh2", netns=netns, lease=True)
            names = [e.name for e in client.list_links(netns=netns)]
            return names, json.dumps(client.status("vc2", netns=netns).to_dict())

    names, status = run_as(identities.member, look)
    assert names == ["lo", "vc2"]
    assert json.loads(status)["kind"] == "vxcan" and json.loads(status)["up"] is True
    assert "vxh2" not in links()  # leased: gone with the member's connection
