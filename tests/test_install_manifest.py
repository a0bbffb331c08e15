"""install.sh's manifest: uninstall removes exactly what the install recorded, following no symlink.

Finding 15 of issue 13: with a component of the install replaced by a symlink (as anyone who
can write to a group-writable --prefix can do), `install.sh --uninstall` ran `rm -rf` through
it, outside the install. All in DESTDIR mode; the venv is recorded the way install.sh's venv
step records it (``manifest.py tree``), without running pip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import test_deploy
from tests.test_deploy import MANIFEST, ROOT, VENV, files_under, install, manifest_entries

stage = test_deploy.stage  # the fixture: an empty DESTDIR below tmp_path
TOOL = ROOT / "deploy" / "manifest.py"


def tool(
    stage: Path, *args: str, new: Path | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """deploy/manifest.py for the staged install."""
    options = ["--root", str(stage), "--manifest", "/" + MANIFEST]
    if new is not None:
        options += ["--new", str(new)]
    return subprocess.run(
        [sys.executable, str(TOOL), *options, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def record_venv(stage: Path, tmp_path: Path) -> None:
    """Create a (fake) venv and record it as install.sh's venv step does."""
    new = tmp_path / "new-manifest"
    assert tool(stage, "tree", "venv", "/" + VENV, new=new).returncode == 0
    (stage / VENV / "bin").mkdir(parents=True)
    (stage / VENV / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (stage / VENV / "bin/python").write_text("")
    result = tool(stage, "commit", new=new)
    assert result.returncode == 0, result.stderr


def outside_venv(tmp_path: Path) -> Path:
    """A directory outside the stage that looks like a venv, with a file to lose."""
    target = tmp_path / "outside" / "venv"
    target.mkdir(parents=True)
    (target / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (target / "precious").write_text("not hycan's\n")
    return target


def test_uninstall_removes_a_recorded_venv(stage: Path, tmp_path: Path) -> None:
    install(stage, "--prefix", "/usr", "--no-venv")
    record_venv(stage, tmp_path)
    assert manifest_entries(stage)[VENV] == ["venv", "tree"]
    result = install(stage, "--prefix", "/usr", "--uninstall")
    assert f"+ rm -r {stage / VENV}\n" in result.stdout
    assert list(stage.iterdir()) == []


@pytest.mark.parametrize("recorded", [True, False], ids=["manifest", "no-manifest"])
@pytest.mark.parametrize("swapped", ["usr/lib/hycan", VENV], ids=["parent", "venv"])
def test_uninstall_follows_no_symlink(
    stage: Path, tmp_path: Path, recorded: bool, swapped: str
) -> None:
    """A component of the venv's path made a symlink to a directory outside: left alone.

    Fails on the script before the manifest: its `rm -rf $PREFIX/lib/hycan/venv` resolved
    the symlinked parent and removed the outside directory.
    """
    install(stage, "--prefix", "/usr", "--no-venv")
    record_venv(stage, tmp_path)
    if not recorded:  # an install by an older install.sh, which kept no manifest
        (stage / MANIFEST).unlink()
    target = outside_venv(tmp_path)
    link = stage / swapped
    subprocess.run(["rm", "-r", str(link)], check=True)
    link.symlink_to(target if swapped == VENV else target.parent)

    result = install(stage, "--prefix", "/usr", "--uninstall", check=False)
    assert (target / "precious").exists(), "removed through the symlink"
    assert (target / "pyvenv.cfg").exists()
    assert result.returncode == 0, result.stderr
    assert link.is_symlink()
    reason = "it is a symlink now" if swapped == VENV else "is a symlink or not a directory"
    assert f"not removing {stage / VENV}: " in result.stderr
    assert reason in result.stderr
    # Everything else the install made is gone.
    assert files_under(stage) == {swapped}


@pytest.mark.parametrize(
    ("venv_file", "kept", "message"),
    [
        ("pyvenv.cfg", set(), ""),
        ("data", {f"{VENV}/data"}, "holds no pyvenv.cfg (not a venv)"),
    ],
    ids=["venv", "not-a-venv"],
)
def test_legacy_uninstall_removes_the_old_layout(
    stage: Path, venv_file: str, kept: set[str], message: str
) -> None:
    """No manifest (an older install.sh): its fixed layout, still only what it made."""
    install(stage, "--prefix", "/usr", "--no-venv")
    (stage / MANIFEST).unlink()
    (stage / VENV).mkdir(parents=True)
    (stage / VENV / venv_file).write_text("home = /usr/bin\n")
    result = install(stage, "--prefix", "/usr", "--uninstall")
    assert "from before the manifest" in result.stdout
    assert message in result.stderr
    assert files_under(stage) == kept
    assert (stage / "usr/lib/hycan").exists() == bool(kept)


@pytest.mark.parametrize("writable", ["var/lib/hycan", MANIFEST])
def test_a_manifest_others_could_write_is_refused(stage: Path, writable: str) -> None:
    install(stage, "--prefix", "/usr", "--no-venv")
    (stage / writable).chmod(0o775 if writable != MANIFEST else 0o664)
    before = files_under(stage)
    result = tool(stage, "--check-owner", "remove")  # what install.sh runs outside DESTDIR
    assert result.returncode == 1
    assert "refusing to trust" in result.stderr
    assert f"{stage / writable}: it is writable by group" in result.stderr
    assert files_under(stage) == before  # nothing removed


@pytest.mark.parametrize(
    "line",
    [
        "files\tfile\t/usr/../../etc/passwd",
        "files\tfile\tetc/passwd",
        "files\tfile\t/",
        "files\tlink\t/usr/bin/hycan",
        "files\tdevice\t/dev/sda",
        "other\tfile\t/etc/passwd",
    ],
)
def test_malformed_manifest_lines_are_refused(stage: Path, line: str) -> None:
    (stage / "etc").mkdir()
    (stage / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    result = tool(stage, "remove", "--entries", "-", stdin=line + "\n")
    assert result.returncode == 1
    assert "install.sh: error:" in result.stderr
    assert (stage / "etc/passwd").exists()


def test_removal_stays_below_the_root(stage: Path, tmp_path: Path) -> None:
    """An absolute symlink inside the stage is not resolved against the host either."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "hycan.conf").write_text("host file\n")
    (stage / "etc").mkdir()
    (stage / "etc/sysusers.d").symlink_to(victim)
    result = tool(
        stage, "remove", "--entries", "-", stdin="files\tfile\t/etc/sysusers.d/hycan.conf\n"
    )
    assert result.returncode == 0
    assert (victim / "hycan.conf").exists()
    assert "is a symlink or not a directory" in result.stderr


def test_install_keeps_the_manifest_private_to_root(stage: Path) -> None:
    install(stage, "--prefix", "/usr", "--no-venv")
    for rel in (MANIFEST, "var/lib/hycan"):
        mode = (stage / rel).stat().st_mode
        assert mode & 0o022 == 0, rel
    assert (stage / MANIFEST).stat().st_uid == os.geteuid()
