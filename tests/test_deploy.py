"""Tests of the deployment files: install.sh, the units, test_with_daemon.sh.

install.sh runs for real, but only in DESTDIR mode (which never creates users,
loads modules, enables or starts anything), so the tests need no root and do
not touch the machine. The venv step is skipped (``--no-venv``) here; the full
install (pip, the wheel, the system-python library) and the manifest's uninstall
are tested in tests/test_install_manifest.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import hycan

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "deploy" / "install.sh"
CHECK_UNITS = ROOT / "deploy" / "check_units.sh"
WITH_DAEMON = ROOT / "scripts" / "test_with_daemon.sh"
LOCK = ROOT / "scripts" / "lock-requirements.sh"
TIMEOUT = 60

COMMANDS = ("hycan-daemon", "hycan_daemon", "hycan")
MANIFEST = "var/lib/hycan/install-manifest"
# Every file (or symlink) a `--prefix /usr --no-venv` install lays out.
EXPECTED_FILES = {
    "usr/bin/hycan-daemon",
    "usr/bin/hycan_daemon",
    "usr/bin/hycan",
    "usr/share/doc/hycan/deployment.md",
    "etc/systemd/system/hycan-daemon.service",
    "etc/systemd/system/hycan-daemon.socket",
    "etc/sysusers.d/hycan.conf",
    "etc/modules-load.d/hycan.conf",
    MANIFEST,
}
VENV = "usr/lib/hycan/venv"


def _system_site() -> str:
    """Where install.sh puts the library for /usr/bin/python3 ('' without one)."""
    if not os.path.exists("/usr/bin/python3"):
        return ""
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    return subprocess.run(
        ["/usr/bin/python3", "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


SYSTEM_SITE = _system_site()


def files_under(root: Path) -> set[str]:
    """Relative paths of all non-directories below ``root`` (symlinks not followed)."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            found.add(str((Path(dirpath) / name).relative_to(root)))
    return found


def manifest_entries(stage: Path) -> dict[str, list[str]]:
    """The staged install's manifest: path (relative to the stage) -> [part, type, target?]."""
    entries = {}
    for line in (stage / MANIFEST).read_text().splitlines():
        if line and not line.startswith("#"):
            part, kind, path, *target = line.split("\t")
            entries[path.lstrip("/")] = [part, kind, *target]
    return entries


def install(
    destdir: Path, *args: str, check: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run deploy/install.sh with DESTDIR set."""
    result = subprocess.run(
        ["bash", str(INSTALL), *args],
        env={**os.environ, "DESTDIR": str(destdir), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def stage(tmp_path: Path) -> Path:
    path = tmp_path / "stage"
    path.mkdir()
    return path


# ------------------------------------------------------------------ install.sh


def test_dry_run_prints_actions_and_changes_nothing(stage: Path) -> None:
    result = install(stage, "--prefix", "/usr", "--dry-run")
    assert list(stage.iterdir()) == []
    assert list(stage.parent.iterdir()) == [stage]  # no work directory either
    out = result.stdout
    for rel in EXPECTED_FILES:
        assert str(stage / rel) in out, rel
    assert f"python3 -m venv {stage / VENV}" in out
    assert "--require-hashes -r" in out
    assert f"{stage}/usr/share/hycan/wheels/hycan-{hycan.__version__}-py3-none-any.whl" in out
    if SYSTEM_SITE:
        assert f"into {stage}{SYSTEM_SITE} " in out
    for word in ("systemctl", "systemd-sysusers", "groupadd", "modprobe", "setsid"):
        assert word not in out, word


def test_an_empty_system_python_skips_the_system_library(stage: Path) -> None:
    result = install(stage, "--prefix", "/usr", "--dry-run", SYSTEM_PYTHON="")
    assert "SYSTEM_PYTHON is empty: not installing the library" in result.stdout
    assert "+ unpack" not in result.stdout
    assert "/usr/share/hycan/wheels/" in result.stdout  # the wheel is still kept


def test_destdir_install_lays_out_exactly_the_documented_files(stage: Path) -> None:
    result = install(stage, "--prefix", "/usr", "--no-venv")
    assert files_under(stage) == EXPECTED_FILES
    assert "not creating users" in result.stdout

    for name in COMMANDS:
        link = stage / "usr/bin" / name
        assert link.is_symlink()
        assert os.readlink(link) == f"/usr/lib/hycan/venv/bin/{name}"

    service = (stage / "etc/systemd/system/hycan-daemon.service").read_text()
    socket_unit = (stage / "etc/systemd/system/hycan-daemon.socket").read_text()
    for text in (service, socket_unit):
        assert "@BINDIR@" not in text
        assert "@DOCDIR@" not in text
        assert "Documentation=file:///usr/share/doc/hycan/deployment.md" in text
    assert "\nExecStart=/usr/bin/hycan-daemon --backend netlink --group hycan\n" in service
    assert "\nListenStream=/run/hycan_daemon.sock\n" in socket_unit

    assert (stage / "etc/modules-load.d/hycan.conf").read_text() == (
        ROOT / "deploy/modules-load.d/vcan.conf"
    ).read_text()
    assert (stage / "etc/sysusers.d/hycan.conf").read_text() == (
        ROOT / "deploy/sysusers.d/hycan.conf"
    ).read_text()
    for rel in EXPECTED_FILES - {f"usr/bin/{c}" for c in COMMANDS}:
        assert (stage / rel).stat().st_mode & 0o777 == 0o644, rel

    # Nothing enabled: no *.wants/ links, no runtime files, nothing next to the stage.
    assert not list(stage.glob("etc/systemd/system/*.wants"))
    assert not (stage / "run").exists()
    assert list(stage.parent.iterdir()) == [stage]

    # The manifest lists every file, link and directory the install created.
    entries = manifest_entries(stage)
    dirs = {str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_dir()}
    assert set(entries) == EXPECTED_FILES | dirs
    for name in COMMANDS:
        assert entries[f"usr/bin/{name}"] == ["files", "link", f"/usr/lib/hycan/venv/bin/{name}"]
    assert entries["etc/sysusers.d"] == ["files", "dir"]
    assert entries[MANIFEST] == ["files", "file"]


def test_destdir_install_is_idempotent(stage: Path) -> None:
    install(stage, "--prefix", "/usr", "--no-venv")
    first = manifest_entries(stage)
    install(stage, "--prefix", "/usr", "--no-venv", HYCAN_INSTALL_NO_VENV="1")
    assert files_under(stage) == EXPECTED_FILES
    assert manifest_entries(stage) == first


def test_default_prefix_is_usr_local(stage: Path) -> None:
    install(stage, "--no-venv")
    assert files_under(stage) == {
        f.replace("usr/", "usr/local/", 1) if f.startswith("usr/") else f for f in EXPECTED_FILES
    }
    service = (stage / "etc/systemd/system/hycan-daemon.service").read_text()
    assert "\nExecStart=/usr/local/bin/hycan-daemon --backend netlink --group hycan\n" in service


def test_destdir_uninstall_removes_everything(stage: Path) -> None:
    install(stage, "--prefix", "/usr", "--no-venv")
    dry = install(stage, "--prefix", "/usr", "--uninstall", "--dry-run")
    assert files_under(stage) == EXPECTED_FILES
    assert f"+ rm {stage}/usr/bin/hycan\n" in dry.stdout

    install(stage, "--prefix", "/usr", "--uninstall")
    assert list(stage.iterdir()) == []  # the directories it created are gone too
    # A second uninstall finds nothing to do and still succeeds.
    install(stage, "--prefix", "/usr", "--uninstall")


def test_uninstall_keeps_what_the_install_did_not_create(stage: Path) -> None:
    (stage / "etc/modules-load.d").mkdir(parents=True)
    (stage / "etc/modules-load.d/other.conf").write_text("dummy\n")
    (stage / "usr/bin").mkdir(parents=True)
    install(stage, "--prefix", "/usr", "--no-venv")
    assert "etc/modules-load.d" not in manifest_entries(stage)
    (stage / "usr/share/doc/hycan/notes.txt").write_text("an admin's file\n")
    venv = stage / VENV  # a venv the manifest does not list (--no-venv)
    venv.mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")

    result = install(stage, "--prefix", "/usr", "--uninstall")
    assert files_under(stage) == {
        "etc/modules-load.d/other.conf",
        "usr/share/doc/hycan/notes.txt",
        f"{VENV}/pyvenv.cfg",
    }
    assert (stage / "usr/bin").is_dir()
    assert f"kept {stage}/usr/share/doc/hycan (directory not empty)" in result.stdout


def test_reinstall_removes_what_the_previous_install_made_and_this_one_does_not(
    stage: Path,
) -> None:
    install(stage, "--prefix", "/usr", "--no-venv")
    # As if an older version had installed a file this one no longer ships.
    old = stage / "usr/share/doc/hycan/old.md"
    old.write_text("old\n")
    with (stage / MANIFEST).open("a") as manifest:
        manifest.write("files\tfile\t/usr/share/doc/hycan/old.md\n")
    result = install(stage, "--prefix", "/usr", "--no-venv")
    assert not old.exists()
    assert f"+ rm {old}\n" in result.stdout
    assert files_under(stage) == EXPECTED_FILES


def test_reinstall_keeps_the_parts_it_does_not_redo(stage: Path) -> None:
    install(stage, "--prefix", "/usr", "--no-venv")
    wheel = "/usr/share/hycan/wheels/hycan-0.1.0-py3-none-any.whl"
    (stage / wheel.lstrip("/")).parent.mkdir(parents=True)
    (stage / wheel.lstrip("/")).write_text("a wheel\n")
    with (stage / MANIFEST).open("a") as manifest:
        manifest.write(f"wheel\tfile\t{wheel}\n")
    install(stage, "--prefix", "/usr", "--no-venv")  # --no-venv: no wheel step
    assert manifest_entries(stage)[wheel.lstrip("/")] == ["wheel", "file"]
    install(stage, "--prefix", "/usr", "--uninstall")
    assert not (stage / wheel.lstrip("/")).exists()


def test_a_failed_install_records_what_it_created(stage: Path) -> None:
    (stage / "etc").mkdir()
    (stage / "etc/modules-load.d").write_text("not a directory\n")
    result = install(stage, "--prefix", "/usr", "--no-venv", check=False)
    assert result.returncode != 0
    assert "not a directory" in result.stderr
    assert "usr/bin/hycan" in manifest_entries(stage)  # placed before the failure
    install(stage, "--prefix", "/usr", "--uninstall")
    assert files_under(stage) == {"etc/modules-load.d"}
    assert list(stage.parent.iterdir()) == [stage]  # its work directory is gone


def test_install_refuses_a_prefix_through_a_symlink(stage: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (stage / "opt").symlink_to(elsewhere)
    result = install(stage, "--prefix", "/opt/hycan", "--no-venv", check=False)
    assert result.returncode != 0
    assert f"{stage}/opt is a symlink or not a directory" in result.stderr
    assert list(elsewhere.iterdir()) == []


def test_uninstall_keeps_a_foreign_program_of_the_same_name(stage: Path) -> None:
    install(stage, "--prefix", "/usr", "--no-venv")
    foreign = stage / "usr/bin/hycan"
    foreign.unlink()
    foreign.write_text("#!/bin/sh\n")
    install(stage, "--prefix", "/usr", "--uninstall")
    assert files_under(stage) == {"usr/bin/hycan"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--prefix", "relative/dir"), "--prefix must be an absolute path"),
        (("--bogus",), "unknown argument: --bogus"),
        (("--prefix",), "--prefix needs a directory"),
    ],
)
def test_install_rejects_bad_arguments(stage: Path, args: tuple[str, ...], message: str) -> None:
    result = install(stage, *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert list(stage.iterdir()) == []


def test_install_rejects_a_relative_destdir(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(INSTALL), "--no-venv"],
        env={**os.environ, "DESTDIR": "relative/stage"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "DESTDIR must be an absolute path" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_install_help() -> None:
    result = subprocess.run(
        ["bash", str(INSTALL), "--help"], capture_output=True, text=True, check=True
    )
    assert "--uninstall" in result.stdout
    assert "DESTDIR" in result.stdout


# ---------------------------------------------------------------- check_units


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (apt: systemd)"
)
def test_check_units_passes() -> None:
    result = subprocess.run(
        ["bash", str(CHECK_UNITS)], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Overall exposure level for hycan-daemon.service" in result.stdout
    assert result.stderr == ""


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (apt: systemd)"
)
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s + "Bogus=1\n", "Unknown key 'Bogus'"),
        (
            lambda s: (
                s.replace("ProtectSystem=strict\n", "")
                .replace("PrivateDevices=yes\n", "")
                .replace("User=hycan\n", "")
            ),
            "is above 1.5",
        ),
    ],
    ids=["verify-finding", "score-too-high"],
)
def test_check_units_fails_on_a_worse_unit(
    tmp_path: Path, edit: Callable[[str], str], message: str
) -> None:
    for unit in (ROOT / "deploy/systemd").iterdir():
        text = unit.read_text()
        if unit.name == "hycan-daemon.service":
            text = edit(text)
        (tmp_path / unit.name).write_text(text)
    result = subprocess.run(
        ["bash", str(CHECK_UNITS)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "HYCAN_UNITS_DIR": str(tmp_path)},
    )
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.skipif(
    shutil.which("shellcheck") is None,
    reason="shellcheck not installed (apt-get install shellcheck; scripts/run-tests.sh does)",
)
def test_scripts_are_shellcheck_clean() -> None:
    result = subprocess.run(
        ["shellcheck", str(INSTALL), str(CHECK_UNITS), str(WITH_DAEMON), str(LOCK)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


# ------------------------------------------------------- test_with_daemon.sh

# Stands in for hycan-daemon: binds --socket, prints the ready line, records its
# pid and arguments, serves until SIGTERM, removes the socket, exits 0. With
# STUB_FAIL=1 it exits 3 at once, like a daemon that cannot start.
STUB_DAEMON = textwrap.dedent(
    f"""\
    #!{sys.executable}
    import json, os, signal, socket, sys
    if os.environ.get("STUB_FAIL"):
        print("stub: cannot start", file=sys.stderr)
        sys.exit(3)
    args = sys.argv[1:]
    path = args[args.index("--socket") + 1]
    with open(os.environ["STUB_RECORD"], "w") as record:
        json.dump({{"pid": os.getpid(), "args": args}}, record)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen()
    signal.signal(signal.SIGTERM, lambda *_: (os.unlink(path), sys.exit(0)))
    print(f"hycan-daemon stub: serving on {{path}}", flush=True)
    while True:
        sock.accept()[0].close()
    """
)


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path, Path]]:
    """Environment running test_with_daemon.sh against the stub, its TMPDIR and record."""
    daemon = tmp_path / "hycan-daemon"
    daemon.write_text(STUB_DAEMON)
    daemon.chmod(0o755)
    short = Path(f"/tmp/hycan-twd-{uuid.uuid4().hex[:8]}")  # AF_UNIX paths are short
    short.mkdir()
    record = tmp_path / "record.json"
    env = {
        **os.environ,
        "HYCAN_DAEMON": str(daemon),
        "TMPDIR": str(short),
        "STUB_RECORD": str(record),
    }
    yield env, short, record
    shutil.rmtree(short, ignore_errors=True)


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def with_daemon(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """scripts/test_with_daemon.sh ARGS, with the stub daemon's environment."""
    return subprocess.run(
        ["bash", str(WITH_DAEMON), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def test_with_daemon_runs_command_and_cleans_up(
    stub: tuple[dict[str, str], Path, Path], tmp_path: Path
) -> None:
    env, short, record = stub
    seen = tmp_path / "seen"
    result = with_daemon(
        env,
        "--daemon-arg",
        "--log-level=DEBUG",
        "--",
        "sh",
        "-c",
        f'test -S "$HYCAN_DAEMON_SOCKET" && echo "$HYCAN_DAEMON_SOCKET" > {seen}; exit 7',
    )
    assert result.returncode == 7, result.stderr
    info = json.loads(record.read_text())
    sock = seen.read_text().strip()
    assert sock.startswith(str(short)) and sock.endswith("/hycan.sock")
    assert info["args"] == [
        "--backend",
        "memory",
        "--socket",
        sock,
        "--allow-uid",
        str(os.getuid()),
        "--log-level=DEBUG",
    ]
    assert pid_gone(info["pid"])
    assert list(short.iterdir()) == []  # temporary directory removed


def test_with_daemon_netlink_option_and_success_status(
    stub: tuple[dict[str, str], Path, Path],
) -> None:
    env, short, record = stub
    result = with_daemon(env, "--netlink", "true")
    assert result.returncode == 0, result.stderr
    info = json.loads(record.read_text())
    assert info["args"][:2] == ["--backend", "netlink"]
    assert pid_gone(info["pid"])
    assert list(short.iterdir()) == []


def test_with_daemon_cleans_up_when_terminated(stub: tuple[dict[str, str], Path, Path]) -> None:
    env, short, record = stub
    # The command sends SIGTERM to the script (its parent), then exits.
    result = with_daemon(env, "--", "sh", "-c", "kill -TERM $PPID")
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert pid_gone(json.loads(record.read_text())["pid"])
    assert list(short.iterdir()) == []


def test_with_daemon_reports_a_daemon_that_fails_to_start(
    stub: tuple[dict[str, str], Path, Path],
) -> None:
    env, short, _ = stub
    result = with_daemon({**env, "STUB_FAIL": "1"}, "--", "true")
    assert result.returncode == 1
    assert "exited with status 3 before it was ready" in result.stderr
    assert "stub: cannot start" in result.stderr
    assert list(short.iterdir()) == []


def test_with_daemon_rejects_unknown_backend(stub: tuple[dict[str, str], Path, Path]) -> None:
    env, _, _ = stub
    result = with_daemon(env, "--backend", "kernel", "--", "true")
    assert result.returncode == 2
    assert "--backend must be memory or netlink" in result.stderr
