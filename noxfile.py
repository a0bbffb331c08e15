"""Task runner. `nox` runs everything CI runs; `nox -s tests` is the fast inner loop.

Sessions: lint, tests, units (systemd unit checks), vm (real vcan in a qemu VM), fresh (README's
install and a member's first steps in a fresh Debian 12 root), bench.
Real-kernel tests need root (netns, VM, fresh root); as non-root they are skipped with a reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests", "units", "vm", "fresh"]
nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True


@nox.session
def tests(session: nox.Session) -> None:
    """Unit, in-process daemon, CLI and (as root) netns tests."""
    session.install("-e", ".[test]")
    # tests/vm needs a vcan kernel: the `vm` session runs it inside qemu.
    session.run("pytest", "--ignore=tests/vm", *(session.posargs or ["-q"]))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, mypy --strict, the generated sync client being current, sdist + wheel twine-clean."""
    session.install("-e", ".[test]", "ruff", "mypy", "build", "twine")
    python_files = ["src", "bench", "tests", "scripts", "deploy", "noxfile.py"]
    session.run("ruff", "check", *python_files)
    session.run("ruff", "format", "--check", *python_files)
    session.run("mypy", "--strict", "src", "bench")
    session.run("mypy", "--strict", "deploy/manifest.py")
    session.run("python", "scripts/unasync.py", "--check")
    # What a package index would get: built into the session's directory, not the checkout.
    dist = Path(session.create_tmp()) / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist))
    session.run("twine", "check", "--strict", *sorted(str(f) for f in dist.iterdir()))


@nox.session
def units(session: nox.Session) -> None:
    """systemd-analyze verify (must print nothing) and security (score <= 1.5)."""
    session.run("bash", "deploy/check_units.sh", external=True)


@nox.session
def vm(session: nox.Session) -> None:
    """Real vcan, CAN controllers and frames: pytest tests/vm inside a qemu VM (Debian
    kernel), as root.

    Two boots: one with the vcan module and two emulated SJA1000 controllers, one with
    `module_blacklist=vcan` (the error users in containers meet). Each returns pytest's
    exit status.
    """
    session.install("-e", ".[test]")
    python = f"{session.bin}/python"
    # Under emulation imports are ~15x slower: load only the plugins the VM tests use.
    runner = ["python", "tests/vm/run_vm.py", "--timeout", "1500", "--env", "HYCAN_IN_VM=1"]
    runner += ["--env", "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1"]
    plugins = ["-p", "no:cacheprovider", "-p", "pytest_trio.plugin"]
    # tests/vm plus the host tests that skip for want of AF_CAN/vcan, marked `vcan`.
    real_can = "tests/test_can_helper.py::test_frames_cross_a_real_vcan"
    pytest = [python, "-m", "pytest", "tests/vm", real_can, *plugins, *session.posargs]
    # The first boot also has two emulated SJA1000 controllers on one bus (can0, can1).
    boards = ["--can-controllers", "2", "--env", "HYCAN_VM_CAN=2"]
    session.run(*runner, *boards, "--", *pytest)
    session.run(
        *runner, "--append", "module_blacklist=vcan", "--env", "HYCAN_VM_VCAN=0", "--", *pytest
    )


@nox.session
def fresh(session: nox.Session) -> None:
    """debootstrap a Debian 12 root, run README's install command, then a member's first steps.

    Root only (debootstrap, systemd-nspawn); see tests/fresh/README.md. Arguments go to
    tests/fresh/run_fresh.py, e.g. `nox -s fresh -- --source ../other-checkout`.
    """
    if os.geteuid() != 0:
        session.skip("needs root (debootstrap, systemd-nspawn): sudo scripts/run-tests.sh -s fresh")
    if os.path.exists("/run/systemd/container"):  # e.g. `run_fresh.py --run-tests` itself
        session.skip("inside a container: no nested debootstrap + nspawn; run it on the host")
    session.run("python", "tests/fresh/run_fresh.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """The side-by-side benchmark (root for the netlink part); `-- --quick` for a smoke run.

    The benchmark is the top-level `bench/` package, not part of hycan: `python -m bench`
    from the repository root (nox runs sessions there), against hycan installed editable.
    """
    session.install("-e", ".[test]")
    session.run("python", "-m", "bench", *session.posargs)
