"""Task runner. `nox` runs everything CI runs; `nox -s tests` is the fast inner loop.

Sessions: lint, tests, units (systemd unit checks), vm (real vcan in a qemu VM), bench.
Real-kernel tests need root (netns, VM); as non-root they are skipped with a reason.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests", "units", "vm"]
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
    """ruff, mypy --strict on src/, and the generated sync client being current."""
    session.install("-e", ".[test]", "ruff", "mypy")
    session.run("ruff", "check", "src", "tests", "scripts", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "scripts", "noxfile.py")
    session.run("mypy", "--strict", "src")
    session.run("python", "scripts/unasync.py", "--check")


@nox.session
def units(session: nox.Session) -> None:
    """systemd-analyze verify (must print nothing) and security (score <= 1.5)."""
    session.run("bash", "deploy/check_units.sh", external=True)
