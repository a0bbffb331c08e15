"""The ``hycan`` command: output and exit codes (0 ok, 1 refused/failed, 2 usage, 3 no daemon)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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


def test_list_shows_owner_and_lease(daemon_process: DaemonProcess) -> None:
    sock = ("--socket", daemon_process.path)
    assert hycan(*sock, "create", "mine0").returncode == 0
    listed = hycan(*sock, "--json", "list")
    assert listed.returncode == 0, listed.stderr
    result = json.loads(listed.stdout)
    links = {entry["name"]: entry for entry in result["links"]}
    assert result["ok"] and links["mine0"]["owner"] == os.geteuid()
    assert links["mine0"]["lease"] is False and "delete" in links["mine0"]["may"]
    assert set(links["mine0"]) == {
        "name", "index", "kind", "up", "owner", "owner_name", "lease", "may"
    }  # fmt: skip
    table = hycan(*sock, "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "KIND", "STATE", "OWNER", "LEASE", "YOU", "MAY"]
    assert any(line.split()[:5] == ["mine0", "vcan", "down", "root", "no"] for line in table)


def test_lease_runs_the_command_with_its_vcans_and_removes_them(
    daemon_process: DaemonProcess,
) -> None:
    sock = ("--socket", daemon_process.path)
    script = (
        "import json, os, subprocess, sys\n"
        "names = os.environ['HYCAN_VCANS'].split()\n"
        "out = subprocess.run([sys.executable, '-m', 'hycan.cli', '--socket', sys.argv[1],\n"
        "    '--json', 'list'], capture_output=True, text=True).stdout\n"
        "links = {e['name']: e for e in json.loads(out)['links']}\n"
        "print(json.dumps([links[n] for n in names]))\n"
        "sys.exit(7)\n"
    )
    command = [*sock, "lease", "--vcan", "bus0", "--vcan", "bus1", "--classic", "--"]
    ran = hycan(*command, sys.executable, "-c", script, daemon_process.path)
    assert ran.returncode == 7, ran.stderr  # the command's own exit status
    seen = json.loads(ran.stdout)
    assert [(e["name"], e["up"], e["lease"]) for e in seen] == [
        ("bus0", True, True),
        ("bus1", True, True),
    ]
    status = json.loads(hycan(*sock, "--json", "status", "bus0").stdout)
    assert status["exists"] is False
    assert hycan(*sock, "lease", "--", "/no/such/command").returncode == 127
    assert hycan(*sock, "lease").returncode == 2  # no command: a usage error


def test_lease_vcans_go_when_hycan_itself_is_killed(daemon_process: DaemonProcess) -> None:
    sock = ("--socket", daemon_process.path)
    script = "import os, sys; print(os.environ['HYCAN_VCAN'], flush=True); sys.stdin.read()"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hycan.cli", *sock, "lease", "--", sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        name = proc.stdout.readline().strip()  # the command runs: its vcan exists
        assert name.startswith("hyc")
        assert json.loads(hycan(*sock, "--json", "status", name).stdout)["exists"]
        proc.kill()  # SIGKILL hycan; its command is left waiting on stdin
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while json.loads(hycan(*sock, "--json", "status", name).stdout)["exists"]:
            assert time.monotonic() < deadline, "the leased vcan outlived its connection"
    finally:
        proc.kill()
        assert proc.stdin is not None
        proc.stdin.close()


def test_vxcan_and_routes_from_the_command_line(daemon_process: DaemonProcess) -> None:
    sock = ("--socket", daemon_process.path)
    assert hycan(*sock, "create", "hub0").returncode == 0
    made = hycan(*sock, "vxcan", "vxa", "--peer", "vxb", "--route-to", "hub0")
    assert made.stdout.strip() == "vxa and its peer vxb created (up); route vxb <-> hub0 added"
    listed = json.loads(hycan(*sock, "--json", "route", "list").stdout)["routes"]
    assert [(r["src"], r["dst"]) for r in listed] == [("vxb", "hub0"), ("hub0", "vxb")]
    assert "vxb -> hub0  all  classic" in hycan(*sock, "route", "list").stdout
    gone = hycan(*sock, "route", "del", "vxb", "hub0", "--both")
    assert gone.stdout.strip() == "route vxb <-> hub0 deleted"
    missing = hycan(*sock, "route", "del", "vxb", "hub0", "--can-id", "0x123")
    assert missing.returncode == 1 and "no such route" in missing.stderr
    assert hycan(*sock, "route", "add", "vxb").returncode == 1  # DST missing
    assert hycan(*sock, "delete", "vxa").returncode == 0


def test_hycan_run_gives_the_command_links_and_its_exit_status(
    daemon_process: DaemonProcess,
) -> None:
    sock = ("--socket", daemon_process.path)
    script = 'test "$HYCAN_VCANS" = "vc0 vx0" && readlink /proc/self/ns/net && exit 7'
    run = hycan(*sock, "run", "--vcan", "vc0", "--vxcan", "vx0=vcan9", "--", "sh", "-c", script)
    assert run.returncode == 1 and "vcan9 not found" in run.stderr  # no such host link
    assert hycan(*sock, "create", "vcan9").returncode == 0
    run = hycan(*sock, "run", "--vcan", "vc0", "--vxcan", "vx0=vcan9", "--", "sh", "-c", script)
    assert run.returncode == 7, run.stderr
    assert run.stdout.strip() != os.readlink("/proc/self/ns/net")  # its own namespace
    assert json.loads(hycan(*sock, "--json", "route", "list").stdout)["routes"] == []
    names = [e["name"] for e in json.loads(hycan(*sock, "--json", "list").stdout)["links"]]
    assert not [n for n in names if n.startswith("hyx")]  # the vxcan's host end is gone
    usage = hycan(*sock, "run", "--vxcan", "novalue", "--", "true")
    assert usage.returncode == 2 and "NAME=HOSTLINK" in usage.stderr
