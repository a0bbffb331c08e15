"""Real vcan and real CAN frames on a Debian kernel (run inside the VM by `nox -s vm`)."""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import DaemonProcess
from tests.identities import Identities, run_as

import hycan
from hycan import DaemonClient
from hycan.errors import ErrorCode

CAN_FRAME = struct.Struct("=IB3x8s")  # can_id, len, pad, data


def link(name: str) -> dict[str, object] | None:
    """`ip -d -j link show NAME`, or None if there is no such link."""
    result = subprocess.run(
        ["ip", "-d", "-j", "link", "show", name], capture_output=True, text=True
    )
    if result.returncode != 0:
        return None
    data: dict[str, object] = json.loads(result.stdout)[0]
    return data


def kind(name: str) -> object:
    info = link(name)
    assert info is not None
    return info.get("linkinfo", {}).get("info_kind")  # type: ignore[attr-defined]


def is_up(name: str) -> bool:
    info = link(name)
    assert info is not None
    return "UP" in info["flags"]  # type: ignore[operator]


@pytest.fixture
def vm_daemon(shared_dir: Path, identities: Identities) -> Iterator[DaemonProcess]:
    """The netlink daemon with the security policy, serving the throwaway group."""
    proc = DaemonProcess(
        str(shared_dir / "hycan.sock"), "--backend", "netlink", "--group", identities.group
    ).start()
    yield proc
    proc.stop()


@pytest.mark.vcan
def test_unprivileged_client_drives_a_vcan(
    vm_daemon: DaemonProcess, identities: Identities
) -> None:
    def client(step: str) -> object:
        with DaemonClient(vm_daemon.path) as c:
            if step == "status":
                return c.status("vcan0")
            return getattr(c, step)("vcan0")

    member = identities.member
    assert os.geteuid() == 0 and member.uid != 0
    assert run_as(member, lambda: client("create")) == "vcan0 created"
    assert kind("vcan0") == "vcan" and not is_up("vcan0")
    run_as(member, lambda: client("up"))
    assert is_up("vcan0")
    status = run_as(member, lambda: client("status"))
    assert (status.exists, status.kind, status.up, status.mtu) == (True, "vcan", True, 72)
    run_as(member, lambda: client("down"))
    assert not is_up("vcan0")
    run_as(member, lambda: client("delete"))
    assert link("vcan0") is None
    _, log = vm_daemon.stop()
    assert f"uid={member.uid}" in log and "op=CREATE_VCAN name=vcan0 result=ok" in log


@pytest.mark.vcan
def test_unprivileged_client_exchanges_a_can_frame(
    vm_daemon: DaemonProcess, identities: Identities
) -> None:
    def bring_up_and_talk() -> tuple[int, bytes]:
        with hycan.Netlink("vcan1", socket_path=vm_daemon.path) as net:
            net.up()
        rx = socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW)
        tx = socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW)
        with rx, tx:
            rx.bind(("vcan1",))
            tx.bind(("vcan1",))
            rx.settimeout(5)
            tx.send(CAN_FRAME.pack(0x123, 4, b"\xde\xad\xbe\xef"))
            can_id, length, data = CAN_FRAME.unpack(rx.recv(CAN_FRAME.size))
        return can_id, data[:length]

    assert os.getuid() == 0
    assert run_as(identities.member, bring_up_and_talk) == (0x123, b"\xde\xad\xbe\xef")


@pytest.mark.vcan
@pytest.mark.parametrize(
    ("op", "name", "error", "code", "message"),
    [
        ("create", "lo", hycan.AlreadyExists, ErrorCode.ALREADY_EXISTS, "lo already exists"),
        ("up", "missing0", hycan.InterfaceNotFound, ErrorCode.INTERFACE_NOT_FOUND, "not found"),
        ("create", "0123456789abcdef", hycan.InvalidName, ErrorCode.INVALID_NAME, "at most 15"),
    ],
)
def test_errors_on_a_real_kernel(
    vm_daemon: DaemonProcess,
    op: str,
    name: str,
    error: type[hycan.HycanError],
    code: ErrorCode,
    message: str,
) -> None:
    with DaemonClient(vm_daemon.path) as client, pytest.raises(error, match=message) as info:
        getattr(client, op)(name)
    assert info.value.code == code
    assert link("0123456789abcde") is None  # never truncated into a 15-byte name


@pytest.mark.vcan
def test_raw_sixteen_byte_name_is_refused_by_the_daemon(vm_daemon: DaemonProcess) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(vm_daemon.path)
        sock.sendall(b"\x01\x10" + b"0123456789abcdef")
        header = sock.recv(4)
    assert header[:2] == bytes([0, ErrorCode.INVALID_NAME])
    assert link("0123456789abcde") is None


@pytest.mark.vcan
def test_in_process_fallback_creates_and_ups_a_vcan() -> None:
    script = textwrap.dedent(
        """
        import os, subprocess
        def forbidden(*a, **k):
            raise AssertionError("the fallback must not spawn anything")
        subprocess.Popen = forbidden
        os.system = os.execv = os.execve = forbidden
        import hycan._paths as paths
        paths.SYSTEM_SOCKET = paths.MANUAL_SOCKET = "/nonexistent/hycan.sock"
        from hycan import Netlink
        with Netlink("vcan5") as net:
            assert net.client.socket_path == "in-process"
            net.up()
            print(net.status().up)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYCAN_")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
    assert kind("vcan5") == "vcan" and is_up("vcan5")
    subprocess.run(["ip", "link", "del", "vcan5"], check=True)


@pytest.mark.no_vcan
def test_create_without_vcan_module_says_how_to_fix(vm_daemon: DaemonProcess) -> None:
    with DaemonClient(vm_daemon.path) as client, pytest.raises(hycan.NotSupported) as info:
        client.create("vcan0")
    assert info.value.code == ErrorCode.NOT_SUPPORTED
    assert info.value.message.startswith("not supported: the vcan kernel module is not loaded")
    assert "modprobe vcan" in info.value.message
    assert link("vcan0") is None


CANFD_FRAME = struct.Struct("=IBBxx64s")  # can_id, len, flags, res0, res1, data
CAN_RAW_FD_FRAMES = 5
SOL_CAN_RAW = 101


@pytest.mark.vcan
def test_unprivileged_can_fd_frame_on_mtu_72(
    vm_daemon: DaemonProcess, identities: Identities
) -> None:
    def fd_exchange() -> tuple[int, int, bytes]:
        with DaemonClient(vm_daemon.path) as client:
            client.create("vcanfd0")
            client.set_mtu("vcanfd0", 16)  # classic first: the daemon sets what we ask
            client.set_mtu("vcanfd0", 72)
            client.up("vcanfd0")
            mtu = client.status("vcanfd0").mtu
        rx = socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW)
        tx = socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW)
        with rx, tx:
            for sock in (rx, tx):
                sock.setsockopt(SOL_CAN_RAW, CAN_RAW_FD_FRAMES, 1)
                sock.bind(("vcanfd0",))
            rx.settimeout(5)
            payload = bytes(range(64))
            tx.send(CANFD_FRAME.pack(0x1AB, 64, 0, payload))
            can_id, length, _flags, data = CANFD_FRAME.unpack(rx.recv(CANFD_FRAME.size))
        assert mtu == 72
        return can_id, length, data

    assert run_as(identities.member, fd_exchange) == (0x1AB, 64, bytes(range(64)))
    info = link("vcanfd0")
    assert info is not None and info["mtu"] == 72


@pytest.mark.vcan
def test_bitrate_on_vcan_is_refused_with_the_mapped_error(vm_daemon: DaemonProcess) -> None:
    with DaemonClient(vm_daemon.path) as client:
        client.create("vcanbr0")
        with pytest.raises(hycan.NotSupported, match="does not support") as info:
            client.set_bitrate("vcanbr0", 500000)
    assert info.value.code == ErrorCode.NOT_SUPPORTED


@pytest.fixture
def slcan() -> Iterator[str]:
    """A real CAN controller driver: slcan (N_SLCAN line discipline) on a pty, as can0."""
    import fcntl
    import pty

    subprocess.run(["modprobe", "slcan"], check=True)
    before = {entry for entry in os.listdir("/sys/class/net")}
    master, slave = pty.openpty()
    fcntl.ioctl(slave, 0x5423, struct.pack("i", 17))  # TIOCSETD, N_SLCAN
    (name,) = {entry for entry in os.listdir("/sys/class/net")} - before
    try:
        yield name
    finally:
        os.close(slave)  # the line discipline and its link go away with the tty
        os.close(master)


@pytest.mark.vcan
def test_bitrate_on_a_real_can_driver(slcan: str, shared_dir: Path, identities: Identities) -> None:
    proc = DaemonProcess(
        str(shared_dir / "hycan.sock"),
        "--backend",
        "netlink",
        "--group",
        identities.group,
        "--allow-iface",
        "can*",
    ).start()

    def refusal(client: DaemonClient, **settings: object) -> object:
        try:
            client.set_bitrate(slcan, **settings)  # type: ignore[arg-type]
        except hycan.HycanError as exc:
            return exc.code
        return "accepted"

    def configure() -> tuple[object, ...]:
        with DaemonClient(proc.path) as client:
            client.set_bitrate(slcan, 500000)
            status = client.status(slcan)
            refused = (
                refusal(client, bitrate=123456),  # slcan only knows fixed bitrates
                refusal(client, bitrate=500000, data_bitrate=2_000_000, fd=True),  # no CAN FD
                refusal(client, restart_ms=100),  # nor bus-off restart
            )
        assert status.can is not None
        return status.kind, status.can["bitrate"], refused

    try:
        assert run_as(identities.member, configure) == (
            "can",
            500000,
            (ErrorCode.INVALID_ARGUMENT, ErrorCode.NOT_SUPPORTED, ErrorCode.NOT_SUPPORTED),
        )
        details = subprocess.run(
            ["ip", "-d", "link", "show", slcan], capture_output=True, text=True, check=True
        ).stdout
        assert "bitrate 500000" in details
    finally:
        proc.stop()


APP_TESTS = """
import os

import can

from hycan.can import open_bus


def test_classic_and_fd_frames(vcan, hycan_client):
    assert os.geteuid() != 0
    assert hycan_client.status(vcan).mtu == 72
    with open_bus(vcan, create=False, fd=True) as tx, open_bus(vcan, create=False, fd=True) as rx:
        tx.send(can.Message(arbitration_id=0x12, data=b"\\x01\\x02\\x03", is_extended_id=False))
        classic = rx.recv(timeout=5)
        tx.send(can.Message(arbitration_id=0x1AB, data=bytes(range(64)), is_fd=True))
        fd = rx.recv(timeout=5)
    assert classic is not None and classic.data == b"\\x01\\x02\\x03" and not classic.is_fd
    assert fd is not None and fd.is_fd and fd.data == bytes(range(64))
    print("NAME", vcan)


def test_failing_test_still_cleans_up(vcan):
    print("NAME", vcan)
    assert False, "intended"
"""


@pytest.mark.vcan
def test_pytest_fixture_for_an_unprivileged_can_test_suite(
    vm_daemon: DaemonProcess, identities: Identities, shared_dir: Path
) -> None:
    """A CAN application's own test suite, run by a non-root user, gets real vcans."""
    os.chmod("/root", 0o711)  # VM overlay only: lets the member run this interpreter
    (shared_dir / "test_app.py").write_text(APP_TESTS)
    member = identities.member
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(shared_dir),
        "HYCAN_DAEMON_SOCKET": vm_daemon.path,
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    command = [
        *("setpriv", f"--reuid={member.name}", f"--regid={member.gid}", "--init-groups"),
        *(sys.executable, "-m", "pytest", "-p", "hycan.pytest_plugin", "-p", "no:cacheprovider"),
        *("-s", "-q", f"--rootdir={shared_dir}", str(shared_dir / "test_app.py")),
    ]
    result = subprocess.run(
        command,
        cwd=shared_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "1 failed, 1 passed" in result.stdout, result.stdout + result.stderr
    names = re.findall(r"NAME (\w+)", result.stdout)
    assert len(set(names)) == 2  # a fresh vcan per test
    for name in names:
        assert link(name) is None  # deleted afterwards, the failing test's too
    _, log = vm_daemon.stop()
    for name in names:
        assert f"uid={member.uid}" in log and f"op=DELETE name={name} result=ok" in log
