"""Real CAN controllers: two emulated SJA1000 boards (QEMU's kvaser_pci) on one virtual bus,
driven by Debian's kernel, configured by an unprivileged member through hycan-daemon.

`nox -s vm` boots the first VM with `run_vm.py --can-controllers 2` and sets
HYCAN_VM_CAN=2; then `modprobe kvaser_pci` makes them can0 and can1. Without the boards
these tests fail (they are the proof that the settings reach a real controller).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import DaemonProcess
from tests.identities import Identities, become, run_as

import hycan
from hycan import DaemonClient
from hycan._protocol import Response, ResponseDecoder
from hycan.errors import ErrorCode

CAN_FRAME = struct.Struct("=IB3x8s")  # can_id, len, pad, data
CONTROLLERS = ("can0", "can1")
# hycan's mode name -> what `ip -d -j link` lists in "ctrlmode"
IP_MODE = {
    "listen_only": "LISTEN-ONLY",
    "loopback": "LOOPBACK",
    "one_shot": "ONE-SHOT",
    "berr_reporting": "BERR-REPORTING",
    "triple_sampling": "TRIPLE-SAMPLING",
    "presume_ack": "PRESUME-ACK",
    "cc_len8_dlc": "CC-LEN8-DLC",
}

pytestmark = pytest.mark.vcan


def ip_can(name: str) -> dict[str, Any]:
    """The ``info_data`` of `ip -d -j link show NAME` (iproute2's view of the controller)."""
    out = subprocess.run(
        ["ip", "-d", "-j", "link", "show", name], capture_output=True, text=True, check=True
    ).stdout
    data: dict[str, Any] = json.loads(out)[0]["linkinfo"]["info_data"]
    return data


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def boards() -> None:
    """Load the kvaser_pci driver once; both boards must appear."""
    if os.environ.get("HYCAN_VM_CAN") != "2":
        pytest.fail("boot the VM with `run_vm.py --can-controllers 2` (nox -s vm does)")
    subprocess.run(["modprobe", "kvaser_pci"], check=True)
    for name in CONTROLLERS:
        assert Path(f"/sys/class/net/{name}").exists(), f"{name} did not appear"


@pytest.fixture
def daemon(boards: None, shared_dir: Path, identities: Identities) -> Iterator[DaemonProcess]:
    """The netlink daemon letting the member change `can*`; the boards start down, at
    500 kbit/s, every mode off (as root, whatever a test left)."""
    for name in CONTROLLERS:
        ip("link", "set", name, "down")
        modes = [word for mode in IP_MODE for word in (mode.replace("_", "-"), "off")]
        ip("link", "set", name, "type", "can", "bitrate", "500000", "restart-ms", "0", *modes)
    proc = DaemonProcess(
        str(shared_dir / "hycan.sock"),
        "--backend", "netlink", "--group", identities.group, "--allow-iface", "can*",
    ).start()  # fmt: skip
    yield proc
    proc.stop()


def as_member(identities: Identities, daemon: DaemonProcess, fn: Any) -> Any:
    """``fn(client)`` in a child process running as the unprivileged member."""

    def body() -> Any:
        assert os.geteuid() != 0
        with DaemonClient(daemon.path) as client:
            return fn(client)

    return run_as(identities.member, body)


def refusal(client: DaemonClient, name: str, **settings: object) -> tuple[int, str] | None:
    try:
        client.set_can(name, **settings)
    except hycan.HycanError as exc:
        return int(exc.code), exc.message
    return None


def test_bitrates_and_sample_points(daemon: DaemonProcess, identities: Identities) -> None:
    wanted = [(125_000, 0.875), (250_000, 0.75), (500_000, 0.875), (1_000_000, 0.75)]

    def configure(client: DaemonClient) -> list[tuple[Any, ...]]:
        seen = []
        for bitrate, point in wanted:
            client.set_bitrate("can0", bitrate, sample_point=point)
            can = client.status("can0").can
            assert can is not None
            kernel = ip_can("can0")["bittiming"]
            seen.append((can["bitrate"], can["sample_point"], kernel["bitrate"],
                         float(kernel["sample_point"])))  # fmt: skip
        return seen

    assert as_member(identities, daemon, configure) == [(b, p, b, p) for b, p in wanted]


def test_segment_timing(daemon: DaemonProcess, identities: Identities) -> None:
    def configure(client: DaemonClient) -> dict[str, Any]:
        client.set_can("can0", tq=250, prop_seg=5, phase_seg1=6, phase_seg2=4, sjw=2)
        can = client.status("can0").can
        assert can is not None
        return can

    can = as_member(identities, daemon, configure)
    kernel = ip_can("can0")["bittiming"]
    # 1 / (250 ns * (1 + 5 + 6 + 4)) = 250 kbit/s; sample point (1 + 5 + 6) / 16
    assert (kernel["bitrate"], kernel["tq"], kernel["sjw"]) == (250_000, 250, 2)
    assert (can["bitrate"], can["sample_point"]) == (250_000, 0.75)
    assert can["timing"] == {"tq": 250, "prop_seg": 5, "phase_seg1": 6, "phase_seg2": 4,
                             "sjw": 2, "brp": 2}  # fmt: skip
    assert can["timing_const"]["name"] == "sja1000" and can["clock"] == 8_000_000


def test_each_mode_on_and_off(daemon: DaemonProcess, identities: Identities) -> None:
    def toggle(client: DaemonClient) -> list[tuple[str, list[str], list[str]]]:
        seen = []
        for mode in IP_MODE:
            client.set_can("can0", **{mode: True})
            on = client.status("can0").can["modes"]  # type: ignore[index]
            kernel_on = ip_can("can0").get("ctrlmode", [])
            client.set_can("can0", **{mode: False})
            seen.append((mode, on, kernel_on))
            assert ip_can("can0").get("ctrlmode", []) == []
            assert client.status("can0").can["modes"] == []  # type: ignore[index]
        return seen

    for mode, on, kernel_on in as_member(identities, daemon, toggle):
        assert (on, kernel_on) == ([mode], [IP_MODE[mode]]), mode


def send(name: str, can_id: int, data: bytes) -> None:
    with socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW) as tx:
        tx.bind((name,))
        tx.send(CAN_FRAME.pack(can_id, len(data), data.ljust(8, b"\0")))


def test_frames_cross_the_bus_and_counters_move(
    daemon: DaemonProcess, identities: Identities
) -> None:
    def bring_up(client: DaemonClient) -> None:
        for name in CONTROLLERS:
            client.set_bitrate(name, 500_000)
            client.up(name)

    def listen_only(client: DaemonClient) -> None:
        client.down("can1")
        client.set_can("can1", listen_only=True)
        client.up("can1")

    def frames(client: DaemonClient) -> tuple[dict[str, Any], dict[str, Any]]:
        can0, can1 = (client.status(name).can for name in CONTROLLERS)
        assert can0 is not None and can1 is not None
        return can0, can1

    as_member(identities, daemon, bring_up)
    before = as_member(identities, daemon, frames)
    assert [can["state"] for can in before] == ["ERROR-ACTIVE", "ERROR-ACTIVE"]
    assert before[0]["berr_counter"] == {"tx": 0, "rx": 0}
    assert set(before[0]["stats"]) == {"bus_error", "error_warning", "error_passive",
                                       "bus_off", "arbitration_lost", "restarts"}  # fmt: skip
    for step, can_id in (("both active", 0x123), ("can1 listen-only", 0x124)):
        with socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW) as rx:
            rx.bind(("can1",))
            rx.settimeout(10)
            send("can0", can_id, b"\xde\xad")
            got_id, length, data = CAN_FRAME.unpack(rx.recv(CAN_FRAME.size))
        assert (got_id, data[:length]) == (can_id, b"\xde\xad"), step
        if step == "both active":
            as_member(identities, daemon, listen_only)
    after = as_member(identities, daemon, frames)
    assert ip_can("can1").get("ctrlmode") == ["LISTEN-ONLY"]
    assert after[0]["frames"]["tx_frames"] - before[0]["frames"]["tx_frames"] == 2
    assert after[0]["frames"]["tx_bytes"] - before[0]["frames"]["tx_bytes"] == 4
    assert after[1]["frames"]["rx_frames"] - before[1]["frames"]["rx_frames"] == 2
    assert after[1]["modes"] == ["listen_only"]


def test_what_an_sja1000_lacks_is_code_12(daemon: DaemonProcess, identities: Identities) -> None:
    def attempt(client: DaemonClient) -> tuple[Any, ...]:
        return (
            refusal(client, "can0", termination=120),
            refusal(client, "can0", bitrate=500_000, data_bitrate=2_000_000, fd=True),
            refusal(client, "can0", restart_ms=100),
            client.status("can0").can["restart_ms"],  # type: ignore[index]
            refusal(client, "can0", bitrate=500_000, tq=125),
        )

    termination, fd, restart, restart_ms, both = as_member(identities, daemon, attempt)
    assert termination == (ErrorCode.NOT_SUPPORTED, "not supported: can0 has no switchable "
                           "termination")  # fmt: skip
    assert fd is not None and fd[0] == ErrorCode.NOT_SUPPORTED
    assert "can0 cannot do fd (its modes: loopback, listen_only" in fd[1]
    assert restart is None and restart_ms == 100 and ip_can("can0")["restart_ms"] == 100
    assert both is not None and both[0] == ErrorCode.INVALID_ARGUMENT  # never sent
    assert ip_can("can0")["bittiming"]["bitrate"] == 500_000


def test_watch_sees_controllers_and_links(daemon: DaemonProcess, identities: Identities) -> None:
    """A member's `hycan watch` sees can0 go up and down through another client and
    through root's `ip link`, its CAN state leave STOPPED, and a vcan come and go."""
    member = identities.member
    watcher = subprocess.Popen(
        [sys.executable, "-m", "hycan.cli", "--socket", daemon.path, "--json", "watch",
         "can0", "vcan9"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: become(member),  # noqa: PLW1509 (a test's child)
    )  # fmt: skip
    assert watcher.stdout is not None and watcher.stderr is not None
    seen: list[dict[str, Any]] = []

    def until(event: str, name: str) -> None:
        while not seen or (seen[-1]["event"], seen[-1]["name"]) != (event, name):
            line = watcher.stdout.readline()  # type: ignore[union-attr]
            assert line, f"the watch ended before {event} {name}: {seen}"
            seen.append(json.loads(line))

    try:
        assert watcher.stderr.readline().startswith("hycan: watching can0, vcan9")
        as_member(identities, daemon, lambda c: c.up("can0"))
        until("up", "can0")
        until("can_state", "can0")  # with the up, or found by the daemon's poll
        ip("link", "set", "can0", "down")  # root, behind hycan's back
        until("down", "can0")
        ip("link", "set", "can0", "up")
        until("up", "can0")
        as_member(identities, daemon, lambda c: c.down("can0"))
        until("down", "can0")
        as_member(identities, daemon, lambda c: c.create("vcan9"))
        until("added", "vcan9")
        as_member(identities, daemon, lambda c: c.delete("vcan9"))
        until("removed", "vcan9")
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
    states = [(e["old_state"], e["state"]) for e in seen if e["event"] == "can_state"]
    assert states[0] == ("STOPPED", "ERROR-ACTIVE")
    assert {e["name"] for e in seen} == {"can0", "vcan9"}  # only what was asked for


def test_a_watcher_that_never_reads_stays_bounded(
    daemon: DaemonProcess, identities: Identities
) -> None:
    """Attack on the real kernel: watch every link, never read, while a member toggles a
    vcan 1,500 times. The daemon drops what does not fit in the watcher's queue (kept at
    256 events, tests/test_watch.py) and the watcher, reading at last, is told how many
    it lost; every other client is served meanwhile."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(daemon.path)
        sock.sendall(bytes([0x47, 0, 0, 0]))  # WATCH, no name, no payload
        sock.settimeout(30)
        decoder, events = ResponseDecoder(), list[dict[str, Any]]()
        while not isinstance(started := decoder.next_event(), Response):
            decoder.receive_data(sock.recv(1))  # just the reply: the watch is on
        assert started.success

        def toggle(client: DaemonClient) -> None:
            client.create("vcan8")
            for _ in range(1500):
                client.up("vcan8")
                client.down("vcan8")
            client.delete("vcan8")

        as_member(identities, daemon, toggle)
        assert as_member(identities, daemon, lambda c: c.ping())["backend"] == "netlink"
        while not any(e["event"] == "lost" for e in events):
            chunk = sock.recv(65536)
            assert chunk, "the daemon closed the watch"
            decoder.receive_data(chunk)
            while isinstance(reply := decoder.next_event(), Response):
                events.append(json.loads(reply.message))
    lost = next(e["lost"] for e in events if e["event"] == "lost")
    kept = [e for e in events if e["event"] in ("up", "down")]
    assert lost > 0 and len(kept) + lost <= 3000 + 3  # + added, removed, vcan8's alias


def test_doctor_in_the_vm_finds_everything(daemon: DaemonProcess, identities: Identities) -> None:
    """In the VM (Debian's kernel, modules loaded) a member's `hycan doctor` passes."""
    for module in ("can", "can_raw", "vcan", "vxcan", "can_gw"):
        subprocess.run(["modprobe", module], check=True)

    def doctor() -> tuple[int, dict[str, Any], str]:
        argv = [sys.executable, "-m", "hycan.cli", "--socket", daemon.path]
        report = subprocess.run([*argv, "--json", "doctor"], capture_output=True, text=True)
        human = subprocess.run([*argv, "doctor"], capture_output=True, text=True).stdout
        return report.returncode, json.loads(report.stdout), human

    code, report, human = run_as(identities.member, doctor)
    assert code == 0 and report["ok"], human
    by_name = {c["name"]: c for c in report["checks"] if c["name"] != "modules"}
    assert by_name["daemon"]["ok"] and by_name["group"]["ok"] and by_name["socket"]["ok"]
    modules = [c for c in report["checks"] if c["name"] == "modules"]
    assert [(c["detail"], c["ok"]) for c in modules] == [
        (f"{m} loaded", True) for m in ("can", "can_raw", "vcan", "vxcan", "can_gw")
    ]
    assert human.rstrip().endswith("everything a vcan needs works")
