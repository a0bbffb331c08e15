"""``hycan.can.open_bus``: python-can optional, the link made ready before the Bus exists.

Most tests put a stand-in ``can`` module into ``sys.modules``, so they run whether or not
python-can is installed; one checks the same against the real package, one sends frames
over a real vcan (only where the kernel has AF_CAN and a netlink daemon can be started).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import hycan
from hycan import DaemonClient, LinkStatus
from hycan.can import open_bus
from hycan.pytest_plugin import new_vcan_name
from tests.conftest import DaemonProcess


class RecordingBus:
    """Stands in for ``can.Bus``: records its arguments and the link's state at that moment."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.calls: list[tuple[dict[str, Any], LinkStatus]] = []

    def __call__(self, **kwargs: Any) -> object:
        with DaemonClient(self.socket_path) as client:
            self.calls.append((kwargs, client.status(kwargs["channel"])))
        return self


@pytest.fixture
def fake_can(
    daemon_process: DaemonProcess, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RecordingBus]:
    """A stand-in python-can whose ``Bus`` records; the real one need not be installed."""
    bus = RecordingBus(daemon_process.path)
    module = types.ModuleType("can")
    module.Bus = bus  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "can", module)
    yield bus


def status(daemon: DaemonProcess, name: str) -> LinkStatus:
    with DaemonClient(daemon.path) as client:
        return client.status(name)


def test_missing_python_can_is_a_clear_import_error(
    daemon_process: DaemonProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "can", None)  # `import can` now fails
    with pytest.raises(ImportError, match=r"needs python-can.*pip install 'hycan\[can\]'"):
        open_bus("vcan0", socket_path=daemon_process.path)
    assert not status(daemon_process, "vcan0").exists  # failed before touching any link


def test_importing_hycan_can_does_not_import_python_can() -> None:
    code = "import sys, hycan.can\nprint('can' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_creates_and_brings_up_before_the_bus(
    fake_can: RecordingBus, daemon_process: DaemonProcess
) -> None:
    bus = open_bus(
        "vcan7", socket_path=daemon_process.path, bitrate=None, receive_own_messages=True
    )
    assert bus is fake_can
    [(kwargs, seen)] = fake_can.calls
    assert kwargs == {
        "interface": "socketcan",
        "channel": "vcan7",
        "fd": False,
        "bitrate": None,
        "receive_own_messages": True,
    }
    assert seen.exists and seen.kind == "vcan" and seen.up  # ready before the Bus was made
    assert status(daemon_process, "vcan7").up  # and left up for the caller


def test_create_false_needs_an_existing_link(
    fake_can: RecordingBus, daemon_process: DaemonProcess
) -> None:
    with pytest.raises(hycan.InterfaceNotFound):
        open_bus("can0", create=False, socket_path=daemon_process.path)
    assert fake_can.calls == []
    assert not status(daemon_process, "can0").exists  # nothing was created
    with DaemonClient(daemon_process.path) as client:
        client.create("vcan3")
    open_bus("vcan3", create=False, socket_path=daemon_process.path)
    assert fake_can.calls[0][1].up


def test_fd_switches_a_classic_vcan_to_mtu_72_before_up(
    fake_can: RecordingBus, daemon_process: DaemonProcess
) -> None:
    with DaemonClient(daemon_process.path) as client:
        client.create("vcan1")
        client.set_mtu("vcan1", 16)
    open_bus("vcan1", fd=True, socket_path=daemon_process.path)
    [(kwargs, seen)] = fake_can.calls
    assert kwargs["fd"] is True
    assert seen.mtu == 72 and seen.up


def test_fd_on_an_up_classic_vcan_is_refused_not_bounced(
    fake_can: RecordingBus, daemon_process: DaemonProcess
) -> None:
    with DaemonClient(daemon_process.path) as client:
        client.create("vcan2")
        client.set_mtu("vcan2", 16)
        client.up("vcan2")
    with pytest.raises(hycan.HycanError, match="bring it down first"):
        open_bus("vcan2", fd=True, socket_path=daemon_process.path)
    assert fake_can.calls == []
    after = status(daemon_process, "vcan2")
    assert after.up and after.mtu == 16


def test_fd_leaves_an_up_fd_vcan_alone(
    fake_can: RecordingBus, daemon_process: DaemonProcess
) -> None:
    with DaemonClient(daemon_process.path) as client:
        client.create("vcan4")
        client.up("vcan4")  # kernel default mtu 72
    open_bus("vcan4", fd=True, socket_path=daemon_process.path)
    assert fake_can.calls[0][1].mtu == 72


def test_daemon_errors_propagate(fake_can: RecordingBus, tmp_path: Path) -> None:
    with pytest.raises(hycan.DaemonUnavailable, match=r"nobody\.sock"):
        open_bus("vcan0", socket_path=str(tmp_path / "nobody.sock"))
    assert fake_can.calls == []


def test_with_real_python_can_module(
    daemon_process: DaemonProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    can = pytest.importorskip("can", reason="python-can is not installed (hycan[can] extra)")
    recorder = RecordingBus(daemon_process.path)
    monkeypatch.setattr(can, "Bus", recorder)
    assert open_bus("vcan5", fd=True, socket_path=daemon_process.path) is recorder
    [(kwargs, seen)] = recorder.calls
    assert kwargs == {"interface": "socketcan", "channel": "vcan5", "fd": True}
    assert seen.up


def _af_can_missing() -> str | None:
    if not hasattr(socket, "AF_CAN"):
        return "this Python has no socket.AF_CAN"
    try:
        socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW).close()
    except OSError as exc:
        return f"the kernel has no AF_CAN ({exc.strerror}); `nox -s vm` runs this test in qemu"
    return None


@pytest.mark.vcan  # also collected by `nox -s vm`, which runs it on a vcan kernel
def test_frames_cross_a_real_vcan(tmp_path: Path) -> None:
    can = pytest.importorskip("can", reason="python-can is not installed (hycan[can] extra)")
    reason = _af_can_missing()
    if reason:
        pytest.skip(reason)
    if os.geteuid() != 0:
        pytest.skip(
            "needs root to start a netlink-backend daemon (CI runs as root; `nox -s vm` "
            "runs this test in qemu)"
        )
    name = new_vcan_name()
    daemon = DaemonProcess(str(tmp_path / "real.sock"), "--backend", "netlink").start()
    try:
        try:
            sender = open_bus(name, fd=True, socket_path=daemon.path)
        except hycan.NotSupported as exc:
            pytest.skip(f"{exc}; `nox -s vm` runs this test on a kernel with vcan")
        try:
            with open_bus(name, create=False, fd=True, socket_path=daemon.path) as receiver:
                sender.send(can.Message(arbitration_id=0x123, data=b"\x01\x02"))
                classic = receiver.recv(timeout=2)
                sender.send(can.Message(arbitration_id=0x456, data=bytes(range(48)), is_fd=True))
                fd_frame = receiver.recv(timeout=2)
        finally:
            sender.shutdown()
        assert classic is not None and classic.data == b"\x01\x02"
        assert fd_frame is not None and fd_frame.is_fd and fd_frame.data == bytes(range(48))
    finally:
        with DaemonClient(daemon.path) as client, contextlib.suppress(hycan.InterfaceNotFound):
            client.delete(name)
        daemon.stop()
