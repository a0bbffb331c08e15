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
        await client.set_can(
            "can0",
            bitrate=500000,
            sample_point=0.875,
            fd=True,
            data_bitrate=2_000_000,
            restart_ms=100,
        )
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
        with pytest.raises(hycan.NotSupported, match="vcan0 is not a CAN controller") as info:
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
        ({"bitrate": 500000, "tq": 125}, "either bitrate or tq"),
        ({"tq": 125, "prop_seg": 6}, "needs phase_seg1, phase_seg2 as well"),
        ({"sjw": 2}, "sjw needs bitrate or tq"),
        ({"data_bitrate": 2_000_000}, "data timing needs fd=True"),
        ({"fd": True, "bitrate": 500000}, "fd=True needs the nominal timing"),
        ({"fd_non_iso": True}, "fd_non_iso needs fd=True"),
        ({"listen_only": "on"}, "listen_only must be true or false"),
        ({"tdco": 5}, "tdco needs tdc_mode"),
        ({"tdc_mode": "sometimes"}, "auto, manual or off"),
        ({"tdc_mode": "auto", "tdco": 3}, "tdc_mode needs fd=True"),
        (
            {"tdc_mode": "manual", "tdco": 3, "fd": True, "bitrate": 1, "data_bitrate": 1},
            "tdcv goes with tdc_mode manual",
        ),
        ({"termination": 70000}, "termination must be"),
        ({"prop_seg": 0, "tq": 1, "phase_seg1": 1, "phase_seg2": 1}, "prop_seg must be"),
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
    listen = CanSettings(listen_only=True).to_payload()
    assert not handle(handler, Op.SET_CAN, "other0", listen)[0]
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
    assert "vcan0 is not a CAN controller" in refused.stderr
    modes = hycan_cli("set-can", "vcan0", "--listen-only", "on", "--one-shot", "off")
    assert modes.returncode == 1 and "not a CAN controller" in modes.stderr
    bad = hycan_cli("set-bitrate", "vcan0", "500000", "--sample-point", "87.5")
    assert bad.returncode == 1 and "fraction" in bad.stderr


def test_can_messages_decode_with_pyroute2() -> None:
    """The RTM_NEWLINK the netlink backend sends, read back by pyroute2's own decoder."""
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    import hycan.backends.netlink  # noqa: F401 (what the daemon imports: kinds stay ours)
    from hycan.backends._canlink import can_restart_attrs, can_settings_attrs, can_status

    kinds = ifinfmsg.ifinfo.data_map
    assert kinds["can"].__module__ == "hycan.backends._canlink"
    assert kinds["vxcan"] is ifinfmsg.ifinfo.veth_data

    def roundtrip(attrs: list[object]) -> object:
        msg = ifinfmsg()
        msg["index"] = 0
        msg["attrs"] = [("IFLA_IFNAME", "can0"), *attrs]
        msg.encode()
        decoded = ifinfmsg(msg.data)
        decoded.decode()
        return decoded.get_attr("IFLA_LINKINFO")

    settings = CanSettings(
        bitrate=500000,
        sample_point=0.875,
        data_bitrate=2_000_000,
        data_sample_point=0.75,
        fd=True,
        restart_ms=100,
        listen_only=True,
        one_shot=False,
        tdc_mode="manual",
        tdcv=4,
        tdco=5,
        termination=120,
    )
    linkinfo = roundtrip(can_settings_attrs(settings))
    assert linkinfo.get_attr("IFLA_INFO_KIND") == "can"  # type: ignore[attr-defined]
    data = linkinfo.get_attr("IFLA_INFO_DATA")  # type: ignore[attr-defined]
    assert data.get_attr("IFLA_CAN_BITTIMING")["sample_point"] == 875  # tenths of a percent
    # mask: fd 0x20 | listen-only 0x02 | one-shot 0x08 | both TDC bits 0x600
    assert data.get_attr("IFLA_CAN_CTRLMODE")["mask"] == 0x62A
    assert data.get_attr("IFLA_CAN_CTRLMODE")["flags"] == 0x422
    tdc = dict(data.get_attr("IFLA_CAN_TDC")["attrs"])
    assert (tdc["IFLA_CAN_TDC_TDCV"], tdc["IFLA_CAN_TDC_TDCO"]) == (4, 5)
    assert "IFLA_CAN_TDC_TDCF" not in tdc
    assert data.get_attr("IFLA_CAN_TERMINATION") == 120
    status = can_status(linkinfo)
    assert status is not None
    assert {k: status[k] for k in ("bitrate", "sample_point", "data_bitrate", "fd")} == {
        "bitrate": 500000,
        "sample_point": 0.875,
        "data_bitrate": 2_000_000,
        "fd": True,
    }
    assert (status["data_sample_point"], status["restart_ms"]) == (0.75, 100)
    assert status["modes"] == ["listen_only", "fd", "tdc_manual"]
    assert (status["tdc"], status["termination"]) == ({"tdcv": 4, "tdco": 5}, 120)
    assert status["state"] is None and status["stats"] is None  # not sent by a request
    restart = roundtrip(can_restart_attrs()).get_attr("IFLA_INFO_DATA")  # type: ignore[attr-defined]
    # The kernel's policy wants IFLA_CAN_RESTART as a u32, as `ip ... type can restart` sends.
    assert restart.get_attr("IFLA_CAN_RESTART") == 1
    assert restart.getvalue()["attrs"][0][0] == "IFLA_CAN_RESTART"


def test_can_status_reads_what_a_controller_reports() -> None:
    """The STATUS ``can`` part from bytes as the 6.1 kernel's SJA1000 driver sends them:
    state, error counters, limits, supported modes and IFLA_INFO_XSTATS statistics."""
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    from hycan.backends._canlink import can_status

    stats = struct.pack("=6I", 7, 1, 2, 3, 4, 5)  # struct can_device_stats
    msg = ifinfmsg()
    msg["index"] = 2
    info_data = {
        "attrs": [
            ("IFLA_CAN_BITTIMING", {"bitrate": 500000, "sample_point": 875, "tq": 125,
                                    "prop_seg": 6, "phase_seg1": 7, "phase_seg2": 2,
                                    "sjw": 1, "brp": 1}),
            ("IFLA_CAN_BITTIMING_CONST", {"name": b"sja1000", "tseg1_min": 1, "tseg1_max": 16,
                                          "tseg2_min": 1, "tseg2_max": 8, "sjw_max": 4,
                                          "brp_min": 1, "brp_max": 64, "brp_inc": 1}),
            ("IFLA_CAN_CLOCK", 8_000_000),
            ("IFLA_CAN_STATE", 2),
            ("IFLA_CAN_CTRLMODE", {"mask": 0x7FF, "flags": 0x12}),
            ("IFLA_CAN_BERR_COUNTER", {"txerr": 128, "rxerr": 3}),
            ("IFLA_CAN_CTRLMODE_EXT", {"attrs": [("IFLA_CAN_CTRLMODE_SUPPORTED", 0x15F)]}),
        ]
    }  # fmt: skip
    msg["attrs"] = [
        ("IFLA_IFNAME", "can0"),
        (
            "IFLA_LINKINFO",
            {
                "attrs": [
                    ("IFLA_INFO_KIND", "can"),
                    ("IFLA_INFO_DATA", info_data),
                    ("IFLA_INFO_XSTATS", stats),
                ]
            },
        ),
    ]
    msg.encode()
    decoded = ifinfmsg(msg.data)
    decoded.decode()
    can = can_status(decoded.get_attr("IFLA_LINKINFO"))
    assert can is not None
    assert (can["state"], can["berr_counter"]) == ("ERROR-PASSIVE", {"tx": 128, "rx": 3})
    assert can["modes"] == ["listen_only", "berr_reporting"]
    assert can["modes_supported"] == [
        "loopback", "listen_only", "triple_sampling", "one_shot", "berr_reporting",
        "presume_ack", "cc_len8_dlc",
    ]  # fmt: skip
    assert can["timing"] == {"tq": 125, "prop_seg": 6, "phase_seg1": 7, "phase_seg2": 2,
                             "sjw": 1, "brp": 1}  # fmt: skip
    assert can["timing_const"]["name"] == "sja1000"
    assert can["timing_const"]["tseg1_max"] == 16
    assert can["clock"] == 8_000_000
    assert can["stats"] == {"bus_error": 7, "error_warning": 1, "error_passive": 2,
                            "bus_off": 3, "arbitration_lost": 4, "restarts": 5}  # fmt: skip
    assert json.loads(json.dumps(can)) == can  # the STATUS JSON carries it as is


async def test_unsupported_settings_name_what_the_controller_lacks(
    daemon: InProcessDaemon,
) -> None:
    daemon.backend.plug_can_adapter("can0", modes=("loopback", "listen_only"), terminations=())
    async with AsyncDaemonClient(daemon.path) as client:
        with pytest.raises(hycan.NotSupported, match="can0 cannot do one_shot") as info:
            await client.set_can("can0", one_shot=True, loopback=True)
        assert info.value.code == ErrorCode.NOT_SUPPORTED
        assert "its modes: loopback, listen_only" in info.value.message
        with pytest.raises(hycan.NotSupported, match="no switchable termination"):
            await client.set_can("can0", termination=120)
        assert "set" in await client.set_can("can0", listen_only=True, one_shot=False)
        can = (await client.status("can0")).can
        assert can is not None and can["modes"] == ["listen_only"]
        await client.set_can("can0", listen_only=False, loopback=True)
        can = (await client.status("can0")).can
        assert can is not None and can["modes"] == ["loopback"]


async def test_termination_and_segment_timing(daemon: InProcessDaemon) -> None:
    daemon.backend.plug_can_adapter("can0")
    async with AsyncDaemonClient(daemon.path) as client:
        await client.set_can("can0", termination=120)
        with pytest.raises(hycan.InvalidArgument, match="termination one it offers"):
            await client.set_can("can0", termination=60)
        await client.set_can("can0", tq=125, prop_seg=6, phase_seg1=7, phase_seg2=2, sjw=1)
        can = (await client.status("can0")).can
        assert can is not None and (can["termination"], can["terminations_supported"]) == (
            120,
            [0, 120],
        )
        assert (await client.status("can0")).can["state"] == "STOPPED"  # type: ignore[index]
        await client.up("can0")
        assert (await client.status("can0")).can["state"] == "ERROR-ACTIVE"  # type: ignore[index]


def test_cli_status_of_a_controller_shows_its_can_state() -> None:
    from hycan.cli import describe

    backend = MemoryBackend()
    backend.plug_can_adapter("can0", modes=("loopback", "listen_only"), terminations=())
    ref = backend.resolve("can0")
    backend.set_can(ref, CanSettings(bitrate=500000, sample_point=0.875, listen_only=True))
    backend.set_up(ref, True)
    lines = describe(backend.status("can0")).splitlines()
    assert lines[0] == "can0: kind can, up, operstate UP, mtu 16"
    assert lines[1] == "  state ERROR-ACTIVE (berr-counter tx 0 rx 0), restart-ms 0"
    assert lines[2] == "  bitrate 500000 sample-point 0.875"
    assert lines[3:5] == ["  modes listen_only", "  supported loopback,listen_only"]
