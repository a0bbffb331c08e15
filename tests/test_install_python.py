"""The Python side of install.sh: the hash-pinned venv, the wheel, the system-python library.

One full DESTDIR install (pip, python-prctl compiled, ~15 s) is shared by the slow tests here;
tests that change it work on a copy. Users' own venvs install the staged wheel from the index
(trio, python-can).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import hycan
from tests.test_deploy import (
    COMMANDS,
    EXPECTED_FILES,
    ROOT,
    SYSTEM_SITE,
    VENV,
    files_under,
    install,
    manifest_entries,
)

WHEEL = f"usr/share/hycan/wheels/hycan-{hycan.__version__}-py3-none-any.whl"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
WITH_DAEMON = ROOT / "scripts" / "test_with_daemon.sh"
needs_system_python = pytest.mark.skipif(
    not SYSTEM_SITE, reason="no /usr/bin/python3 (Debian: apt-get install python3)"
)


def pinned(name: str) -> dict[str, tuple[str, list[str]]]:
    """deploy/NAME: package -> (pinned version, hashes)."""
    text = (ROOT / "deploy" / name).read_text().replace("\\\n", " ")
    pins = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        spec, *options = line.split("--hash=")
        req = Requirement(spec.strip())
        version = str(req.specifier).removeprefix("==")
        assert str(req.specifier) == f"=={version}", line
        pins[req.name] = (version, [o.split()[0] for o in options])
    return pins


# ------------------------------------------------------------- the requirement files


def test_daemon_requirements_pin_the_daemon_extra_with_hashes() -> None:
    pins = pinned("requirements-daemon.txt")
    for spec in PYPROJECT["project"]["optional-dependencies"]["daemon"]:
        req = Requirement(spec)
        assert req.name in pins, f"{req.name}: run scripts/lock-requirements.sh"
        assert req.specifier.contains(pins[req.name][0]), spec
    assert {"trio", "pyroute2", "python-prctl", "attrs", "outcome", "sniffio"} <= set(pins)
    for name, (_, hashes) in pins.items():
        assert hashes, name
        assert all(h.startswith("sha256:") and len(h) == 71 for h in hashes), name


def test_build_requirements_satisfy_the_build_system() -> None:
    pins = pinned("requirements-build.txt")
    for spec in PYPROJECT["build-system"]["requires"]:
        req = Requirement(spec)
        assert req.specifier.contains(pins[req.name][0]), spec
    assert all(hashes for _, hashes in pins.values())


# ------------------------------------------------------------------ the full install


def git_leftovers() -> list[str]:
    """Untracked and ignored files in the checkout."""
    return subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--ignored", "--untracked-files=all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()


@pytest.fixture(scope="module")
def full_install(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[str]]:
    """A `--prefix /usr` DESTDIR install with the venv: (stage, git status before, after)."""
    stage = tmp_path_factory.mktemp("full") / "stage"
    is_git = (ROOT / ".git").exists()
    before = git_leftovers() if is_git else []
    # This interpreter has venv and headers; the default (/usr/bin/python3) might first
    # need apt-get. A DESTDIR install only warns about a base interpreter below /root
    # (pyenv), which the real service could not run.
    install(stage, "--prefix", "/usr", PYTHON=sys.executable)
    after = git_leftovers() if is_git else []
    return stage, before, after


@pytest.fixture
def installed(full_install: tuple[Path, list[str], list[str]], tmp_path: Path) -> Path:
    """A copy of the full install, for a test that changes it."""
    copy = tmp_path / "stage"
    shutil.copytree(full_install[0], copy, symlinks=True)
    return copy


def clean_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **extra}


def with_staged_daemon(
    stage: Path, tmp_path: Path, *command: str
) -> subprocess.CompletedProcess[str]:
    """COMMAND with the system library on its path, against the staged venv's daemon.

    scripts/test_with_daemon.sh runs the daemon (memory backend) on a socket below tmp_path
    and exports HYCAN_DAEMON_SOCKET.
    """
    daemon = tmp_path / "hycan-daemon"
    daemon.write_text(f'#!/bin/sh\nexec {stage / VENV}/bin/python -m hycan.daemon.main "$@"\n')
    daemon.chmod(0o755)
    site = stage / SYSTEM_SITE.lstrip("/")
    return subprocess.run(
        ["bash", str(WITH_DAEMON), "--", *command],
        cwd=tmp_path,
        env=clean_env(HYCAN_DAEMON=str(daemon), TMPDIR=str(tmp_path), PYTHONPATH=str(site)),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_full_install_layout_and_manifest(full_install: tuple[Path, list[str], list[str]]) -> None:
    stage = full_install[0]
    site = SYSTEM_SITE.lstrip("/")
    outside = {
        f
        for f in files_under(stage)
        if not f.startswith((VENV + "/", site + "/") if site else VENV)
    }
    assert outside == EXPECTED_FILES | {WHEEL}

    # The manifest lists every path the install created, the venv as one tree.
    entries = manifest_entries(stage)
    created = {str(p.relative_to(stage)) for p in stage.rglob("*")}
    assert {p for p in created if not p.startswith(VENV + "/")} == set(entries)
    assert entries[VENV] == ["venv", "tree"]
    assert entries[WHEEL] == ["wheel", "file"]

    venv = stage / VENV
    for name in COMMANDS:
        script = venv / "bin" / name
        assert script.read_text().splitlines()[0] == "#!/usr/lib/hycan/venv/bin/python", name
    leftovers = subprocess.run(
        ["grep", "-rlIF", str(stage), str(venv / "bin")], capture_output=True, text=True
    )
    assert leftovers.stdout == ""
    python = venv / "bin" / "python"
    code = (
        "import importlib.metadata as m, hycan.daemon.main, trio, pyroute2, prctl\n"
        "print(' '.join(f'{d}=={m.version(d)}' for d in"
        " ('trio', 'pyroute2', 'python-prctl', 'hycan', 'setuptools')))"
    )
    probe = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, env=clean_env()
    )
    assert probe.returncode == 0, probe.stderr
    # Exactly the pinned versions; hycan itself from the wheel (no dependencies resolved).
    pins = {**pinned("requirements-daemon.txt"), **pinned("requirements-build.txt")}
    expected = [f"{d}=={pins[d][0]}" for d in ("trio", "pyroute2", "python-prctl")]
    expected += [f"hycan=={hycan.__version__}", f"setuptools=={pins['setuptools'][0]}"]
    assert probe.stdout.split() == expected
    helped = subprocess.run(
        [str(python), "-m", "hycan.daemon.main", "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0, helped.stderr
    assert "--backend" in helped.stdout


@pytest.mark.slow
def test_install_leaves_nothing_in_the_checkout(
    full_install: tuple[Path, list[str], list[str]],
) -> None:
    stage, before, after = full_install
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: cannot list untracked files (run from a clone, as CI)")
    assert sorted(set(after) - set(before)) == []
    assert list(stage.parent.iterdir()) == [stage]  # the work directory is gone too


@pytest.mark.slow
@needs_system_python
def test_system_python_uses_the_library_without_pip(
    full_install: tuple[Path, list[str], list[str]], tmp_path: Path
) -> None:
    """/usr/bin/python3 with the staged dist-packages: the sync API against a real daemon."""
    stage = full_install[0]
    site = stage / SYSTEM_SITE.lstrip("/")
    code = (
        "import os, sys, hycan, importlib.metadata as m\n"
        "assert hycan.__file__.startswith(sys.argv[1]), hycan.__file__\n"
        "with hycan.DaemonClient(os.environ['HYCAN_DAEMON_SOCKET']) as client:\n"
        "    print(client.ping()['version'])\n"
        "print(sorted({'trio', 'pyroute2', 'prctl'} & sys.modules.keys()))\n"
        "print([e.value for e in m.entry_points(group='pytest11') if e.name == 'hycan'])\n"
    )
    result = with_staged_daemon(stage, tmp_path, "/usr/bin/python3", "-c", code, str(site))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [hycan.__version__, "[]", "['hycan.pytest_plugin']"]
    # Byte-compiled at install: importing it (as root) wrote nothing the manifest lacks.
    ours = f"{SYSTEM_SITE.lstrip('/')}/hycan"
    on_disk = {str(p.relative_to(stage)) for p in site.glob("hycan*/**/*")}
    assert on_disk == {p for p in manifest_entries(stage) if p.startswith(ours)} - {
        str(p.relative_to(stage)) for p in site.glob("hycan*")
    }


@pytest.mark.slow
@needs_system_python
def test_pytest_plugin_loads_from_the_system_library(
    full_install: tuple[Path, list[str], list[str]], tmp_path: Path
) -> None:
    """Debian's python3 with pytest (here: a venv with only pytest) loads hycan's plugin."""
    site = full_install[0] / SYSTEM_SITE.lstrip("/")
    venv = tmp_path / "pytest-venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", "--disable-pip-version-check", "pytest"],
        check=True,
        timeout=300,
    )
    (tmp_path / "test_uses_plugin.py").write_text(
        "import hycan\n"
        "def test_plugin(request, vcan, hycan_client):\n"
        "    assert request.config.pluginmanager.has_plugin('hycan')\n"
        f"    assert hycan.__file__.startswith({str(site)!r})\n"
        "    assert hycan_client.status(vcan).up\n"
    )
    python = str(venv / "bin/python")
    result = with_staged_daemon(
        full_install[0], tmp_path, python, "-m", "pytest", "-q", "-p", "no:cacheprovider"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


@pytest.mark.slow
@needs_system_python
def test_a_users_venv_installs_the_wheel_with_extras(
    full_install: tuple[Path, list[str], list[str]], tmp_path: Path
) -> None:
    """The documented commands: the wheel's path with [trio], --find-links with [can]."""
    wheel = full_install[0] / WHEEL
    venv = tmp_path / "user-venv"
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    subprocess.run([*pip, f"{wheel}[trio]"], check=True, timeout=300)
    subprocess.run([*pip, "--find-links", str(wheel.parent), "hycan[can]"], check=True, timeout=300)
    code = "import hycan, trio, can; print(hycan.AsyncNetlink.__name__, hycan.__version__)"
    result = subprocess.run(
        [str(venv / "bin/python"), "-c", code], capture_output=True, text=True, env=clean_env()
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["AsyncNetlink", hycan.__version__]


@pytest.mark.slow
def test_uninstall_of_the_full_install_leaves_nothing(installed: Path) -> None:
    result = install(installed, "--prefix", "/usr", "--uninstall")
    assert f"+ rm -r {installed / VENV}\n" in result.stdout
    assert list(installed.iterdir()) == []


@pytest.mark.slow
def test_uninstall_of_the_full_install_follows_no_symlink(installed: Path, tmp_path: Path) -> None:
    """The real venv moved out and its parent replaced by a symlink to it: left alone."""
    outside = tmp_path / "outside"
    shutil.move(installed / "usr/lib/hycan", outside)
    (installed / "usr/lib/hycan").symlink_to(outside)
    result = install(installed, "--prefix", "/usr", "--uninstall")
    assert (outside / "venv/pyvenv.cfg").exists()
    assert "is a symlink or not a directory" in result.stderr
    assert files_under(installed) == {"usr/lib/hycan"}
