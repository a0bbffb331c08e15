"""The ``hycan`` command: output and exit codes (0 ok, 1 refused/failed, 2 usage, 3 no daemon)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import DaemonProcess


def hycan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hycan.cli", *args], capture_output=True, text=True, timeout=30
    )


def test_round_trip_exit_zero(daemon_process: DaemonProcess) -> None:
    sock = ("--socket", daemon_process.path)
    assert hycan(*sock, "create", "vcan0").stdout.strip() == "vcan0 created"
    assert hycan(*sock, "up", "vcan0").returncode == 0
    status = hycan(*sock, "status", "vcan0")
    assert status.returncode == 0
    assert status.stdout.strip() == "vcan0: kind vcan, up, operstate UNKNOWN, mtu 72"
    assert hycan(*sock, "down", "vcan0").returncode == 0
    assert hycan(*sock, "delete", "vcan0").returncode == 0
    assert "hycan-daemon 0.1.0" in hycan(*sock, "ping").stdout


def test_json_output(daemon_process: DaemonProcess) -> None:
    result = hycan("--socket", daemon_process.path, "--json", "status", "eth0")
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["kind"] is None and data["up"] is True
    failed = hycan("--socket", daemon_process.path, "--json", "up", "missing0")
    assert failed.returncode == 1
    data = json.loads(failed.stdout)
    assert data == {
        "command": "up",
        "name": "missing0",
        "ok": False,
        "code": 7,
        "error": "InterfaceNotFound",
        "message": "interface missing0 not found",
    }


def test_refusal_exits_one(daemon_process: DaemonProcess) -> None:
    result = hycan("--socket", daemon_process.path, "delete", "eth0")
    assert result.returncode == 1
    assert "only deletes vcan" in result.stderr


def test_invalid_name_exits_one(daemon_process: DaemonProcess) -> None:
    result = hycan("--socket", daemon_process.path, "create", "x" * 16)
    assert result.returncode == 1
    assert "at most 15" in result.stderr


def test_usage_error_exits_two() -> None:
    assert hycan("frobnicate", "vcan0").returncode == 2
    assert hycan("up").returncode == 2


def test_no_daemon_exits_three(tmp_path: Path) -> None:
    result = hycan("--socket", str(tmp_path / "none.sock"), "ping")
    assert result.returncode == 3
    assert "no hycan daemon answered" in result.stderr
    data = json.loads(hycan("--json", "--socket", str(tmp_path / "none.sock"), "up", "x").stdout)
    assert data["ok"] is False and data["error"] == "DaemonUnavailable"
