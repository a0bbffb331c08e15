"""Part 4: ``import hycan`` and a one-shot ``hycan up`` vs ``python -c pass``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

from bench._config import Config, progress
from bench._report import Results, latency_row
from bench._servers import Servers, socket_of
from bench._stats import Summary, median, summarize_ns
from bench._system import python_module


def cli_command() -> list[str]:
    """The installed ``hycan`` script beside this interpreter, else on PATH, else -m."""
    beside = os.path.join(os.path.dirname(sys.executable), "hycan")
    if os.access(beside, os.X_OK):
        return [beside]
    found = shutil.which("hycan")
    return [found] if found else python_module("hycan.cli")


def part_startup(cfg: Config, servers: Servers, results: Results) -> None:
    """`python -c pass` vs `python -c "import hycan"` vs a one-shot `hycan up`."""
    from hycan import DaemonClient

    path = socket_of(servers.daemon)
    with DaemonClient(path) as client:
        client.create("vcan0")
    commands = {
        "pass": [sys.executable, "-c", "pass"],
        "import": [sys.executable, "-c", "import hycan"],
        "cli": [*cli_command(), "--socket", path, "up", "vcan0"],
    }
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, hycan; print(sorted({'trio', 'pyroute2'} & {"
            "m.split('.')[0] for m in sys.modules}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    results.note("startup", f"heavy modules pulled in by `import hycan`: {check.stdout.strip()}")
    per: dict[str, list[Summary]] = {key: [] for key in commands}
    for run in range(cfg.runs):
        progress(f"part 4 start-up: run {run + 1}/{cfg.runs}")
        samples: dict[str, list[int]] = {key: [] for key in commands}
        for _ in range(cfg.startup_count + 1):  # the first round warms the page cache
            for key, argv in commands.items():
                start = time.perf_counter_ns()
                subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
                samples[key].append(time.perf_counter_ns() - start)
        for key, values in samples.items():
            per[key].append(summarize_ns(values[1:]))
    bare = ("python -c pass", per["pass"])
    adds = median([i.p50 - p.p50 for i, p in zip(per["import"], per["pass"], strict=True)]) / 1000
    rows = [
        latency_row("startup", "python -c pass", "-", per["pass"], unit="ms"),
        latency_row(
            "startup",
            'python -c "import hycan"',
            "-",
            per["import"],
            baseline=bare,
            unit="ms",
            goal="adds <= 40 ms",
            goal_id="4a import hycan",
            note=f"adds {adds:.1f} ms",
        ),
        latency_row(
            "startup",
            "hycan up vcan0 (CLI round trip)",
            "-",
            per["cli"],
            baseline=bare,
            unit="ms",
            goal="<= 150 ms",
            goal_id="4b CLI round trip",
        ),
    ]
    rows[1].met = adds <= 40
    rows[2].met = rows[2].median <= 150
    results.rows.extend(rows)
