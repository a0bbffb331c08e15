"""CAN-specific ops (SET_MTU, SET_CAN, CAN_RESTART) through the daemon, memory backend."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest

import hycan
from hycan import AsyncDaemonClient, AsyncNetlink
from hycan._canconfig import CanSettings
from hycan._handler import Handler
from hycan._protocol import Op
from hycan.backends.memory import MemoryBackend
from hycan.errors import ErrorCode
from tests import handling
from tests.conftest import DaemonProcess, InProcessDaemon
from tests.handling import iface_policy


async def test_vcan_mtu_classic_and_fd(daemon: InProcessDaemon) -> None:
    async with await AsyncNetlink.open("vcan0", socket_path=daemon.path) as net:
        assert (await net.status()).mtu == 72
        assert await net.set_mtu(16) == "vcan0 mtu 16"
        assert (await net.status()).mtu == 16
        await net.set_mtu(72)
        await net.up()
        with pytest.raises(hycan.LinkBusy, match="bring it down first") as info:
            await net.set_mtu(16)  # never bounced behind the user's back
        assert info.value.code == ErrorCode.LINK_BUSY
        assert (await net.status()).up
        await net.down()
        with pytest.raises(hycan.InvalidArgument, match="16 for classic CAN or 72"):
            await net.set_mtu(1500)


async def test_bitrate_on_a_can_controller(daemon: InProcessDaemon) -> None:
    daemon.backend.plug_can_adapter("can0")
    async with AsyncDaemonClient(daemon.path) as client:
        message = await client.set_bitrate("can0", 500000, sample_point=0.875)
        assert "500000" in message
        await client.set_bitrate("can0", fd=True, data_bitrate=2_000_000, restart_ms=100)
        can = (await client.status("can0")).can
        assert can is not None
        assert (can["bitrate"], can["sample_point"], can["fd"], can["restart_ms"]) == (
            500000,
            0.875,
            True,
            100,
        )
        assert (await client.status("can0")).mtu == 72
        await client.up("can0")
        with pytest.raises(hycan.LinkBusy, match="bring it down first"):
            await client.set_bitrate("can0", 250000)
        with pytest.raises(hycan.LinkBusy, match="not in bus-off"):
            await client.restart("can0")


async def test_bitrate_on_a_vcan_is_not_supported(daemon: InProcessDaemon) -> None:
    async with AsyncDaemonClient(daemon.path) as client:
        await client.create("vcan0")
        with pytest.raises(hycan.NotSupported, match="does not support these CAN settings") as info:
            await client.set_bitrate("vcan0", 500000)
        assert info.value.code == ErrorCode.NOT_SUPPORTED


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({}, "nothing to set"),
        ({"bitrate": 0}, "bitrate must be"),
        ({"bitrate": 500000, "sample_point": 87.5}, "fraction between 0 and 1"),
        ({"sample_point": 0.8}, "needs bitrate"),
        ({"restart_ms": -1}, "restart_ms"),
    ],
)
def test_invalid_settings_are_refused_before_sending(
    settings: dict[str, object], problem: str
) -> None:
    with pytest.raises(hycan.InvalidArgument, match=problem):
        CanSettings(**settings)  # type: ignore[arg-type]


def handle(handler: Handler, op: Op, name: str, payload: bytes) -> tuple[bool, int, str]:
    return handling.handle(handler, op, name, payload)


@pytest.mark.parametrize(
    ("op", "payload", "message"),
    [
        (Op.SET_MTU, b"\x10\x00", "expected the MTU as u32 LE"),
        (Op.SET_CAN, b"not json", "not a JSON object"),
        (Op.SET_CAN, b"[1]", "not a JSON object"),
        (Op.SET_CAN, b'{"bitrate": 500000, "colour": "red"}', 'unknown keys "colour"'),
        (Op.SET_CAN, b'{"bitrate": "fast"}', "bitrate must be"),
    ],
)
def test_daemon_refuses_bad_payloads(op: Op, payload: bytes, message: str) -> None:
    backend = MemoryBackend()
    backend.plug_can_adapter("can0")
    ok, code, text = handle(Handler(backend), op, "can0", payload)
    assert (ok, code) == (False, ErrorCode.INVALID_ARGUMENT)
    assert message in text


def test_policy_covers_can_ops() -> None:
    backend = MemoryBackend()
    backend.plug_can_adapter("can0")
    backend.plug_can_adapter("other0")
    handler = Handler(backend, policy=iface_policy("can*"))
    payload = CanSettings(bitrate=500000).to_payload()
    assert handle(handler, Op.SET_CAN, "can0", payload)[0]
    ok, code, text = handle(handler, Op.SET_CAN, "other0", payload)
    assert (ok, code) == (False, ErrorCode.PERMISSION_DENIED)
    assert "refusing to set CAN bit timing of other0" in text
    assert backend.status("other0").can["bitrate"] == 0  # type: ignore[index]
    ok, code, _ = handle(handler, Op.SET_MTU, "eth0", struct.pack("<I", 9000))
    assert (ok, code) == (False, ErrorCode.PERMISSION_DENIED)


def test_cli_set_mtu_and_bitrate(daemon_process: DaemonProcess) -> None:
    def hycan_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hycan.cli", "--socket", daemon_process.path, *args],
            capture_output=True,
            text=True,
            timeout=30,
        )

    assert hycan_cli("create", "vcan0").returncode == 0
    assert hycan_cli("set-mtu", "vcan0", "16").stdout.strip() == "vcan0 mtu 16"
    status = json.loads(hycan_cli("--json", "status", "vcan0").stdout)
    assert status["mtu"] == 16
    refused = hycan_cli("set-bitrate", "vcan0", "500000", "--sample-point", "0.875")
    assert refused.returncode == 1
    assert "does not support these CAN settings" in refused.stderr
    bad = hycan_cli("set-bitrate", "vcan0", "500000", "--sample-point", "87.5")
    assert bad.returncode == 1 and "fraction" in bad.stderr


def test_can_messages_decode_with_pyroute2() -> None:
    """The RTM_NEWLINK the netlink backend sends, read back by pyroute2's own decoder."""
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    from hycan.backends._canlink import can_restart_attrs, can_settings_attrs, can_status

    def roundtrip(attrs: list[object]) -> object:
        msg = ifinfmsg()
        msg["index"] = 0
        msg["attrs"] = [("IFLA_IFNAME", "can0"), *attrs]
        msg.encode()
        decoded = ifinfmsg(msg.data)
        decoded.decode()
        return decoded.get_attr("IFLA_LINKINFO")

    settings = CanSettings(500000, 0.875, 2_000_000, 0.75, True, 100)
    linkinfo = roundtrip(can_settings_attrs(settings))
    assert linkinfo.get_attr("IFLA_INFO_KIND") == "can"  # type: ignore[attr-defined]
    data = linkinfo.get_attr("IFLA_INFO_DATA")  # type: ignore[attr-defined]
    assert data.get_attr("IFLA_CAN_BITTIMING")["sample_point"] == 875  # tenths of a percent
    assert data.get_attr("IFLA_CAN_CTRLMODE")["fd"] == "on"
    assert can_status(linkinfo) == {
        "bitrate": 500000,
        "sample_point": 0.875,
        "data_bitrate": 2_000_000,
        "data_sample_point": 0.75,
        "fd": True,
        "restart_ms": 100,
        "state": None,
    }
    restart = roundtrip(can_restart_attrs()).get_attr("IFLA_INFO_DATA")  # type: ignore[attr-defined]
    # The kernel's policy wants IFLA_CAN_RESTART as a u32, as `ip ... type can restart` sends.
    assert restart.get_attr("IFLA_CAN_RESTART") == 1
    assert restart.getvalue()["attrs"][0][0] == "IFLA_CAN_RESTART"
