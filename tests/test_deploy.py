"""Tests of the deployment files: install.sh, the units, test_with_daemon.sh.

install.sh runs for real, but only in DESTDIR mode (which never creates users,
loads modules, enables or starts anything), so the tests need no root and do
not touch the machine. The venv step is skipped (``--no-venv``) in the fast
tests; ``test_destdir_install_with_venv`` (marked slow) does the full pip
install once.
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

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "deploy" / "install.sh"
CHECK_UNITS = ROOT / "deploy" / "check_units.sh"
WITH_DAEMON = ROOT / "scripts" / "test_with_daemon.sh"
TIMEOUT = 60

COMMANDS = ("hycan-daemon", "hycan_daemon", "hycan")
# Every file (or symlink) a `--prefix /usr` install lays out, the venv aside.
EXPECTED_FILES = {
    "usr/bin/hycan-daemon",
    "usr/bin/hycan_daemon",
    "usr/bin/hycan",
    "usr/share/doc/hycan/deployment.md",
    "etc/systemd/system/hycan-daemon.service",
    "etc/systemd/system/hycan-daemon.socket",
    "etc/sysusers.d/hycan.conf",
    "etc/modules-load.d/hycan.conf",
}
VENV = "usr/lib/hycan/venv"


def files_under(root: Path) -> set[str]:
    """Relative paths of all non-directories below ``root`` (symlinks not followed)."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            found.add(str((Path(dirpath) / name).relative_to(root)))
    return found


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
    out = result.stdout
    for rel in EXPECTED_FILES:
        assert str(stage / rel) in out, rel
    assert f"python3 -m venv {stage / VENV}" in out
    assert "pip install" in out
    for word in ("systemctl", "systemd-sysusers", "groupadd", "modprobe", "setsid"):
        assert word not in out, word


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

    # Nothing enabled: no *.wants/ links, no runtime files.
    assert not list(stage.glob("etc/systemd/system/*.wants"))
    assert not (stage / "run").exists()
    assert not (stage / "var").exists()


def test_destdir_install_is_idempotent(stage: Path) -> None:
    install(stage, "--prefix", "/usr", "--no-venv")
    install(stage, "--prefix", "/usr", "--no-venv", HYCAN_INSTALL_NO_VENV="1")
    assert files_under(stage) == EXPECTED_FILES


def test_default_prefix_is_usr_local(stage: Path) -> None:
    install(stage, "--no-venv")
    assert files_under(stage) == {
        f.replace("usr/", "usr/local/", 1) if f.startswith("usr/") else f for f in EXPECTED_FILES
    }
    service = (stage / "etc/systemd/system/hycan-daemon.service").read_text()
    assert "\nExecStart=/usr/local/bin/hycan-daemon --backend netlink --group hycan\n" in service


def test_destdir_uninstall_removes_everything(stage: Path) -> None:
    install(stage, "--prefix", "/usr", "--no-venv")
    (stage / VENV / "bin").mkdir(parents=True)  # as if a venv had been created
    (stage / VENV / "bin/python").write_text("")
    dry = install(stage, "--prefix", "/usr", "--uninstall", "--dry-run")
    assert files_under(stage) == EXPECTED_FILES | {f"{VENV}/bin/python"}
    assert "rm -f" in dry.stdout

    install(stage, "--prefix", "/usr", "--uninstall")
    assert files_under(stage) == set()
    assert not (stage / "usr/lib/hycan").exists()
    # A second uninstall finds nothing to do and still succeeds.
    install(stage, "--prefix", "/usr", "--uninstall")


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


def test_install_help() -> None:
    result = subprocess.run(
        ["bash", str(INSTALL), "--help"], capture_output=True, text=True, check=True
    )
    assert "--uninstall" in result.stdout
    assert "DESTDIR" in result.stdout


@pytest.mark.slow
def test_destdir_install_with_venv(stage: Path) -> None:
    """The full install: a real venv with hycan[daemon] (pip, builds python-prctl)."""
    # This interpreter has venv and headers; the default (/usr/bin/python3)
    # might first need apt-get. A DESTDIR install only warns about a base
    # interpreter below /root (pyenv), which the real service could not run.
    install(stage, "--prefix", "/usr", PYTHON=sys.executable)
    venv = stage / VENV
    assert files_under(stage) - {f for f in files_under(stage) if f.startswith(VENV + "/")} == (
        EXPECTED_FILES
    )
    for name in COMMANDS:
        script = venv / "bin" / name
        assert script.read_text().splitlines()[0] == "#!/usr/lib/hycan/venv/bin/python", name
    leftovers = subprocess.run(
        ["grep", "-rlIF", str(stage), str(venv / "bin")], capture_output=True, text=True
    )
    assert leftovers.stdout == ""
    python = venv / "bin" / "python"
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import hycan.daemon.systemd, hycan.daemon.main, trio, pyroute2, prctl",
        ],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert probe.returncode == 0, probe.stderr
    helped = subprocess.run(
        [str(python), "-m", "hycan.daemon.main", "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0, helped.stderr
    assert "--backend" in helped.stdout


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


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_scripts_are_shellcheck_clean() -> None:
    result = subprocess.run(
        ["shellcheck", str(INSTALL), str(CHECK_UNITS), str(WITH_DAEMON)],
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
