"""``hycan doctor``'s checks, on fake /proc, /sys, /lib/modules and os-release trees."""

from __future__ import annotations

import grp
import json
import os
import pwd
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import hycan
from hycan import _paths
from hycan._doctor import MODULES, System, doctor
from tests.conftest import DaemonProcess

ME = 1000
RELEASES = {
    "debian": 'ID=debian\nVERSION_ID="12"\n',
    "ubuntu": "ID=ubuntu\nID_LIKE=debian\n",
    "mint": 'ID=linuxmint\nID_LIKE="ubuntu debian"\n',
    "fedora": "ID=fedora\n",
    "arch": "ID=arch\n",
    "other": "ID=gentoo\n",
}


def fake_system(
    tmp_path: Path,
    socket_gid: int,
    *,
    release: str = RELEASES["debian"],
    loaded: tuple[str, ...] = ("can", "can_raw", "vcan"),
    dep: tuple[str, ...] = ("kernel/drivers/net/can/vxcan.ko.xz", "kernel/net/can/can-gw.ko.zst"),
    in_groups: bool = True,
    listed: bool = False,
    uid: int = ME,
    **facts: object,
) -> System:
    """A machine whose socket group (``socket_gid``) is named hycan; I am ``alice``."""
    root = tmp_path / "root"
    proc, sysfs, modules = root / "proc", root / "sys", root / "lib/modules/6.1.0-test"
    (proc / "sys/kernel").mkdir(parents=True)
    (proc / "sys/user").mkdir(parents=True)
    (proc / "sys/kernel/unprivileged_userns_clone").write_text("1\n")
    (proc / "sys/user/max_user_namespaces").write_text("63457\n")
    (proc / "modules").write_text("".join(f"{m} 20480 0 - Live 0x0\n" for m in loaded[1:]))
    for m in loaded[:1]:  # the first as /sys/module/NAME only
        (sysfs / "module" / m).mkdir(parents=True)
    modules.mkdir(parents=True)
    (modules / "modules.dep").write_text("".join(f"{d}: kernel/net/can/can.ko.xz\n" for d in dep))
    (modules / "modules.builtin").write_text("kernel/drivers/net/dummy.ko\n")
    (root / "os-release").write_text(release)
    users = {
        0: pwd.struct_passwd(("root", "x", 0, 0, "", "/root", "/bin/sh")),
        ME: pwd.struct_passwd(("alice", "x", ME, 4242, "", "/home/alice", "/bin/sh")),
    }
    hycan_group = grp.struct_group(("hycan", "x", socket_gid, ["alice"] if listed else []))

    def getgrgid(gid: int) -> grp.struct_group:
        if gid != socket_gid:
            raise KeyError(gid)
        return hycan_group

    def getgrnam(name: str) -> grp.struct_group:
        if name != "hycan":
            raise KeyError(name)
        return hycan_group

    args: dict[str, object] = {
        "proc": str(proc),
        "sys": str(sysfs),
        "modules_dir": str(modules),
        "os_release": str(root / "os-release"),
        "uid": uid,
        "groups": frozenset({4242, *([socket_gid] if in_groups else [])}),
        "in_container": False,
        "getpwuid": users.__getitem__,
        "getgrgid": getgrgid,
        "getgrnam": getgrnam,
        **facts,
    }
    return System(**args)  # type: ignore[arg-type]


def by_name(result: dict[str, object], name: str) -> list[dict[str, object]]:
    checks = result["checks"]
    assert isinstance(checks, list)
    return [c for c in checks if c["name"] == name]


def module(result: dict[str, object], name: str) -> dict[str, object]:
    (check,) = [c for c in by_name(result, "modules") if str(c["detail"]).startswith(name + " ")]
    return check


@pytest.fixture
def dead_socket(tmp_path: Path) -> Iterator[str]:
    """A bound socket nobody listens on: it exists, but no daemon answers."""
    path = str(tmp_path / "dead.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)
        os.chmod(path, 0o660)
        yield path


def test_everything_fine_exits_zero(daemon_process: DaemonProcess, tmp_path: Path) -> None:
    gid = os.stat(daemon_process.path).st_gid
    code, result, text = doctor(daemon_process.path, 2.0, None, fake_system(tmp_path, gid))
    assert code == 0, text
    assert result["ok"] is True
    lines = text.splitlines()
    assert lines[0] == (
        f"ok      daemon   hycan-daemon {hycan.__version__} on {daemon_process.path} "
        "(protocol 1, backend memory)"
    )
    assert lines[1].startswith(f"ok      socket   {daemon_process.path}: owner ")
    assert lines[1].endswith(", group hycan, mode 0660")
    assert lines[2] == "ok      group    you are in group hycan"
    assert lines[-1] == "everything a vcan needs works"
    assert module(result, "vcan")["ok"] is True
    assert module(result, "can")["detail"] == "can loaded"  # from /sys/module
    assert module(result, "can_raw")["detail"] == "can_raw loaded"  # from /proc/modules
    # can-gw.ko.zst in modules.dep is the can_gw module
    assert module(result, "can_gw") == {
        "name": "modules",
        "ok": None,
        "detail": "can_gw not loaded (available; the kernel may also load it on first use)",
        "fix": "`sudo modprobe can_gw`",
    }
    assert "warn    modules  vxcan not loaded (available; " in text
    assert text.count("-> `sudo modprobe ") == 2
    assert by_name(result, "userns")[0]["ok"] is True


def test_json_shape(daemon_process: DaemonProcess, tmp_path: Path) -> None:
    gid = os.stat(daemon_process.path).st_gid
    _code, result, _text = doctor(daemon_process.path, 2.0, None, fake_system(tmp_path, gid))
    assert json.loads(json.dumps(result)) == result
    assert set(result) == {"ok", "checks"}
    checks = result["checks"]
    assert [c["name"] for c in checks] == ["daemon", "socket", "group", *["modules"] * 5, "userns"]
    assert all(set(c) == {"name", "ok", "detail", "fix"} for c in checks)
    assert all(c["ok"] in (True, False, None) and isinstance(c["detail"], str) for c in checks)
    assert [str(module(result, m)["detail"]).split()[0] for m in MODULES] == list(MODULES)


def test_no_daemon_is_a_problem_with_a_fix(tmp_path: Path) -> None:
    path = str(tmp_path / "none.sock")
    code, result, text = doctor(path, 1.0, None, fake_system(tmp_path, 4242))
    assert code == 1 and result["ok"] is False
    (daemon,) = by_name(result, "daemon")
    assert daemon["ok"] is False
    assert f"no hycan daemon answered on {path}" in str(daemon["detail"])
    assert daemon["fix"] == f"start one there: `sudo hycan-daemon --socket {path} --group hycan`"
    (sock,) = by_name(result, "socket")
    assert sock["ok"] is False and sock["detail"] == f"{path}: No such file or directory"
    assert text.splitlines()[-1] == "2 problems: a vcan cannot be created until they are fixed"


def test_no_system_daemon_says_start_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_paths, "SYSTEM_SOCKET", str(tmp_path / "system.sock"))
    monkeypatch.setattr(_paths, "MANUAL_SOCKET", str(tmp_path / "manual.sock"))
    code, result, text = doctor(None, 1.0, None, fake_system(tmp_path, 4242))
    assert code == 1
    (daemon,) = by_name(result, "daemon")
    assert str(daemon["fix"]).startswith("`sudo systemctl start hycan-daemon.socket`")
    assert f"{tmp_path / 'system.sock'}, {tmp_path / 'manual.sock'}" in str(daemon["detail"])
    assert text.startswith("PROBLEM daemon   no hycan daemon answered")


@pytest.mark.parametrize(
    ("distro", "fix"),
    [
        ("debian", "`sudo apt install linux-image-$(uname -r)`, then `sudo modprobe vcan`"),
        ("ubuntu", "`sudo apt install linux-modules-extra-$(uname -r)`, then `sudo modprobe vcan`"),
        ("mint", "`sudo apt install linux-modules-extra-$(uname -r)`"),
        ("fedora", "`sudo dnf install kernel-modules-extra`, then `sudo modprobe vcan`"),
        ("arch", "the stock kernel ships it"),
        ("other", "install your distribution's kernel modules package for $(uname -r)"),
    ],
)
def test_vcan_unavailable_exits_one_with_the_distribution_fix(
    daemon_process: DaemonProcess, tmp_path: Path, distro: str, fix: str
) -> None:
    gid = os.stat(daemon_process.path).st_gid
    system = fake_system(tmp_path, gid, release=RELEASES[distro], loaded=("can",), dep=())
    code, result, text = doctor(daemon_process.path, 2.0, None, system)
    assert code == 1
    vcan = module(result, "vcan")
    assert vcan["ok"] is False and fix in str(vcan["fix"])
    assert vcan["detail"] == f"vcan not found in {system.modules_dir}"
    assert module(result, "vxcan")["ok"] is None  # missing, but not needed for a vcan
    assert [c["name"] for c in result["checks"] if c["ok"] is False] == ["modules"]
    assert text.splitlines()[-1] == "1 problem: a vcan cannot be created until they are fixed"
    assert f"PROBLEM modules  vcan not found in {system.modules_dir} -> " in text
    if distro == "ubuntu":
        assert "linux-image" not in text
    if distro == "debian":
        assert "Debian's linux-image package ships it" in str(vcan["fix"])
        assert "extra" not in text


def test_vcan_available_or_built_in_is_enough(
    daemon_process: DaemonProcess, tmp_path: Path
) -> None:
    gid = os.stat(daemon_process.path).st_gid
    system = fake_system(tmp_path, gid, loaded=(), dep=("kernel/drivers/net/can/vcan.ko",))
    code, result, _text = doctor(daemon_process.path, 2.0, None, system)
    assert code == 0
    assert module(result, "vcan")["ok"] is None
    assert module(result, "vcan")["fix"] == "`sudo modprobe vcan`"
    Path(system.modules_dir, "modules.builtin").write_text("kernel/drivers/net/can/vcan.ko\n")
    code, result, _text = doctor(daemon_process.path, 2.0, None, system)
    assert code == 0 and module(result, "vcan")["detail"] == "vcan built into the kernel"


def test_without_modules_dep_the_module_files_count(tmp_path: Path) -> None:
    system = fake_system(tmp_path, 4242, loaded=(), dep=())
    Path(system.modules_dir, "modules.dep").unlink()
    drivers = Path(system.modules_dir, "kernel/drivers/net/can")
    drivers.mkdir(parents=True)
    (drivers / "vcan.ko.xz").write_bytes(b"")
    _code, result, _text = doctor(str(tmp_path / "none.sock"), 1.0, None, system)
    assert module(result, "vcan")["ok"] is None
    assert module(result, "vxcan")["ok"] is None and "not found" in str(module(result, "vxcan"))


def test_in_a_container_the_host_loads_modules(tmp_path: Path) -> None:
    system = fake_system(tmp_path, 4242, loaded=(), dep=(), in_container=True)
    _code, result, _text = doctor(str(tmp_path / "none.sock"), 1.0, None, system)
    assert module(result, "vcan")["fix"] == (
        "on the host run `sudo modprobe vcan` (only the host can load it into a container)"
    )


def test_listed_in_the_group_but_session_predates_it(dead_socket: str, tmp_path: Path) -> None:
    gid = os.stat(dead_socket).st_gid
    system = fake_system(tmp_path, gid, in_groups=False, listed=True)
    code, result, text = doctor(dead_socket, 1.0, None, system)
    assert code == 1
    assert by_name(result, "group") == [
        {
            "name": "group",
            "ok": False,
            "detail": "you were added to group hycan but this login session predates it",
            "fix": "log in again (or run `newgrp hycan`)",
        }
    ]
    assert "PROBLEM group    you were added to group hycan but this login session" in text


def test_not_in_the_group_at_all(dead_socket: str, tmp_path: Path) -> None:
    system = fake_system(tmp_path, os.stat(dead_socket).st_gid, in_groups=False)
    _code, result, _text = doctor(dead_socket, 1.0, None, system)
    (group,) = by_name(result, "group")
    assert group["ok"] is False and group["detail"] == "you are not in group hycan"
    assert group["fix"] == "`sudo usermod -aG hycan $USER`, then log in again"


def test_group_is_only_a_warning_when_the_daemon_answers(
    daemon_process: DaemonProcess, tmp_path: Path
) -> None:
    gid = os.stat(daemon_process.path).st_gid
    system = fake_system(tmp_path, gid, in_groups=False, listed=True)
    code, result, _text = doctor(daemon_process.path, 2.0, None, system)
    assert code == 0 and by_name(result, "group")[0]["ok"] is None


def test_root_is_always_allowed(dead_socket: str, tmp_path: Path) -> None:
    system = fake_system(tmp_path, os.stat(dead_socket).st_gid, in_groups=False, uid=0)
    _code, result, _text = doctor(dead_socket, 1.0, None, system)
    assert by_name(result, "group")[0] == {
        "name": "group",
        "ok": True,
        "detail": "root may use any socket",
        "fix": None,
    }


def test_world_accessible_socket_is_a_warning(dead_socket: str, tmp_path: Path) -> None:
    os.chmod(dead_socket, 0o666)
    system = fake_system(tmp_path, os.stat(dead_socket).st_gid)
    _code, result, text = doctor(dead_socket, 1.0, None, system)
    (sock,) = by_name(result, "socket")
    assert sock["ok"] is None and sock["fix"] == f"chmod o-rw {dead_socket}"
    assert str(sock["detail"]).endswith("mode 0666: every local user may use it")
    assert "warn    socket   " in text


def test_user_namespaces_off_is_a_warning(daemon_process: DaemonProcess, tmp_path: Path) -> None:
    system = fake_system(tmp_path, os.stat(daemon_process.path).st_gid)
    Path(system.proc, "sys/kernel/unprivileged_userns_clone").write_text("0\n")
    code, result, text = doctor(daemon_process.path, 2.0, None, system)
    assert code == 0
    (userns,) = by_name(result, "userns")
    assert userns["ok"] is None
    assert userns["fix"] == "`sudo sysctl -w kernel.unprivileged_userns_clone=1`"
    assert "warn    userns   kernel.unprivileged_userns_clone = 0: `hycan run` cannot" in text


@pytest.mark.skipif(
    os.path.exists("/sys/module/vcan") or os.path.isdir(f"/lib/modules/{os.uname().release}"),
    reason="this test is about a host without CAN modules (the VM has them: tests/vm)",
)
def test_cli_doctor_on_this_host_without_can_modules(daemon_process: DaemonProcess) -> None:
    """The real machine, as the CLI sees it: a daemon answers, but the kernel has no vcan
    (the host of CI): exit 1, vcan a problem with a fix, the report on stdout."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "hycan.cli", "--socket", daemon_process.path, "--json", "doctor"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    checks = {c["detail"].split()[0] if c["name"] == "modules" else c["name"]: c
              for c in json.loads(result.stdout)["checks"]}  # fmt: skip
    assert checks["daemon"]["ok"] is True
    assert checks["vcan"]["ok"] is False and "modprobe vcan" in checks["vcan"]["fix"]
    assert all(checks[m]["ok"] is None for m in MODULES if m != "vcan")  # warnings only
    human = subprocess.run(
        [sys.executable, "-m", "hycan.cli", "--socket", daemon_process.path, "doctor"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "PROBLEM modules  vcan not found" in human.stdout
    assert human.stdout.rstrip().endswith("a vcan cannot be created until they are fixed")
