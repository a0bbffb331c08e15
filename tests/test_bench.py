"""Smoke test of the benchmark: ``python -m bench --quick`` (the top-level ``bench/``, run from
the repository root) runs end to end and writes a complete, sane JSON document. It never
asserts speed (the goals are reported, not tested).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]  # where `bench/` is importable from
SECTIONS = {"cheap_op", "throughput", "netlink", "startup", "clients"}


def positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_quick_bench_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    png = tmp_path / "bench.png"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out), "--plot", str(png)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "| part | measurement | mode | median | p99 | ratio |" in result.stdout
    data = json.loads(out.read_text())

    assert data["meta"]["nproc"] >= 1
    assert data["meta"]["kernel"] and data["meta"]["python"]
    assert set(data["sections"]) == SECTIONS
    for name, section in data["sections"].items():
        if section["skipped"]:
            # Only the netlink part may be skipped, and only for a stated reason (not root).
            assert name == "netlink" and os.geteuid() != 0, (name, section["skipped"])
            assert "root" in section["skipped"]
            assert "part 3 netlink skipped" in result.stdout
            continue
        assert section["rows"], name
        for row in section["rows"]:
            assert positive(row["median"]), row
            assert row["per_run"] and all(positive(v) for v in row["per_run"]), row
            if row["p99"] is not None:
                assert positive(row["p99"]) and row["p99"] >= row["median"], row
            if row["ratio"] is not None:
                assert positive(row["ratio"]) and row["baseline"], row
            if row["goal_id"] is not None:
                assert isinstance(row["met"], bool), row

    rows = {row["name"]: row for s in data["sections"].values() for row in s["rows"]}
    # Every part compares against a baseline measured in the same run.
    assert rows["PING: hycan-daemon"]["ratio"] is not None
    throughput = [r for r in data["sections"]["throughput"]["rows"] if r["goal_id"]]
    assert throughput and throughput[0]["ratio"] is not None
    assert rows['python -c "import hycan"']["ratio"] is not None
    assert rows["PING: trio AsyncDaemonClient"]["ratio"] is not None

    goals = {goal["goal"] for goal in data["goals"]}
    assert {
        "1a cheap op PING",
        "2 throughput",
        "4a import hycan",
        "4b CLI round trip",
        "5 trio client",
    } <= goals
    if not data["sections"]["netlink"]["skipped"]:
        assert {
            "3a up/down vs IPRoute",
            "3b up/down vs ip link",
            "no head-of-line blocking",
            "scale: toggle with 5,000 links",
        } <= goals
        # The VM's 1,000-vcan rows boot qemu for minutes: a full run only, and it says so.
        assert any(
            "VM scale rows skipped: not in --quick" in note for note in notes_of_netlink(data)
        )
        # The C reference of the C++ design is built and measured whenever a compiler is
        # there (CI installs gcc); otherwise the section says why its rows are missing.
        if shutil.which("cc") or shutil.which("gcc"):
            assert {
                "C++ design: up/down",
                "C++ design: failing op",
                "C++ client: up/down",
                "C++ client: failing op",
            } <= goals
        else:
            notes = data["sections"]["netlink"]["notes"]
            assert any("C reference rows skipped" in note for note in notes)
    assert all(isinstance(goal["met"], bool) for goal in data["goals"])

    if importlib.util.find_spec("matplotlib") is not None:
        assert png.stat().st_size > 0
    else:
        assert "plot not written: matplotlib is not installed" in result.stdout


def notes_of_netlink(data: dict[str, Any]) -> list[str]:
    notes: list[str] = data["sections"]["netlink"]["notes"]
    return notes


def test_the_hycan_package_carries_no_benchmark() -> None:
    # The wheel is built from src/hycan: no bench module there, nothing but Python files.
    package = ROOT / "src" / "hycan"
    files = [p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert {p.suffix for p in files} <= {".py", ".typed"}, sorted(map(str, files))
    assert not [p for p in files if "bench" in p.relative_to(package).parts]
    assert (ROOT / "bench" / "oneshot_daemon.c").is_file()
