"""Part 3, scale (root): does a toggle cost more when the namespace holds many links?

Two throwaway netns side by side, one with 10 links and one with 5,000 (veth pairs made
with one ``ip -batch``), a hycan-daemon in each; the same sync client toggles veth0 in
both, in rotating blocks, so both figures share the run's noise (issue 18: the toggle
with 5,000 links costs at most 1.2x the toggle with 10: nothing is linear in the links).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import hycan
from bench import vm_scale
from bench._config import Config, progress
from bench._measure import interleaved, pinned
from bench._report import Results, Row, latency_row
from bench._stats import Summary, median, summarize_ns
from bench._system import Mode, Service, services, throwaway_netns
from bench.netlink import netlink_daemon, toggler

SMALL, LARGE = 10, 5000  # links in each namespace (veth0/veth1 included; lo not counted)
LIMIT = 1.2


def part_scale(cfg: Config, workdir: str, modes: list[Mode], results: Results) -> None:
    """Toggle veth0 through the daemon with SMALL and with LARGE links present."""
    per: dict[tuple[str, str], list[Summary]] = {}
    with contextlib.ExitStack() as stack:
        started = stack.enter_context(services())
        clients = {}
        for links in (SMALL, LARGE):
            netns = stack.enter_context(_netns_with(links))
            path = os.path.join(workdir, f"scale{links}.sock")
            argv = ["ip", "netns", "exec", netns, *netlink_daemon(path)]
            daemon = Service(f"daemon, {links} links", argv, path + ".log")
            started.append(daemon)
            daemon.start()
            clients[links] = stack.enter_context(hycan.DaemonClient(path, timeout=30))
        pids = [service.pid for service in started]
        for run in range(cfg.runs):
            for mode in modes:
                progress(f"part 3 scale: run {run + 1}/{cfg.runs}, {mode.name}")
                with pinned(mode, pids):
                    targets = {str(n): toggler(client) for n, client in clients.items()}
                    samples = interleaved(cfg, targets, cfg.netlink_count)
                for key, values in samples.items():
                    per.setdefault((key, mode.name), []).append(summarize_ns(values))
    for mode in modes:
        results.rows.extend(_rows(mode.name, per))


@contextlib.contextmanager
def _netns_with(links: int) -> Iterator[str]:
    """A throwaway netns with veth0/veth1 and enough more veth pairs for ``links``."""
    with throwaway_netns() as netns:
        batch = "".join(
            f"link add s{i}a type veth peer name s{i}b\n" for i in range(links // 2 - 1)
        )
        subprocess.run(["ip", "-n", netns, "-batch", "-"], input=batch, text=True, check=True)
        yield netns


def _rows(mode: str, per: dict[tuple[str, str], list[Summary]]) -> list[Row]:
    small = per[(str(SMALL), mode)]
    row = latency_row(
        "netlink",
        f"up/down through hycan-daemon with {LARGE:,} links in the namespace",
        mode,
        per[(str(LARGE), mode)],
        baseline=(f"{SMALL} links", small),
        goal=f"<= {LIMIT}x with {SMALL} links",
        goal_id="scale: toggle with 5,000 links",
    )
    row.met = row.ratio is not None and row.ratio <= LIMIT
    base = latency_row("netlink", f"up/down through hycan-daemon with {SMALL} links", mode, small)
    return [base, row]


VM_COUNT = 1000  # vcans created, brought up and deleted per method and round
VM_RUNS = 2
_VM_RUNNER = Path(__file__).resolve().parent.parent / "tests" / "vm" / "run_vm.py"


def part_vm_scale(cfg: Config, results: Results) -> None:
    """1,000 vcans created, brought up and deleted inside the qemu VM (``bench.vm_scale``):
    through the daemon, pipelined and with 8 clients, vs ``ip -batch`` (the goal: <= 1.0x)
    and pyroute2 in-process. Not in ``--quick`` (booting the VM takes minutes)."""
    if cfg.quick:
        results.note("netlink", "VM scale rows skipped: not in --quick (they boot the qemu VM)")
        return
    progress(f"part 3 scale in the VM: {VM_COUNT} vcans x 4 methods x {VM_RUNS} rounds")
    command = [sys.executable, "-m", "bench.vm_scale", "--count", str(VM_COUNT)]
    runner = [sys.executable, str(_VM_RUNNER), "--timeout", "3000", "--env", "HYCAN_IN_VM=1"]
    done = subprocess.run(
        [*runner, "--", *command, "--runs", str(VM_RUNS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=_VM_RUNNER.parents[2],
    )
    found = [line for line in done.stdout.splitlines() if line.startswith(vm_scale.MARK)]
    if done.returncode != 0 or not found:
        tail = (done.stdout + done.stderr).strip()[-400:]
        results.note("netlink", f"VM scale rows skipped: the VM run failed ({tail})")
        return
    seconds: dict[str, list[float]] = json.loads(found[-1].split(" ", 1)[1])["seconds"]
    base = seconds["ip -batch"]
    for label, values in seconds.items():
        row = Row(
            section="netlink",
            name=f"{VM_COUNT} vcans created, up, deleted, in the VM: {label}",
            mode="-",
            unit="ms",
            median=median(values) * 1000,
            per_run=[v * 1000 for v in values],
        )
        if label != "ip -batch":
            row.ratio = median([v / b for v, b in zip(values, base, strict=True)])
            row.baseline = "ip -batch"
        if label.startswith("daemon"):
            row.goal, row.goal_id = "<= 1.0x ip -batch", f"scale: {label}"
            row.met = row.ratio is not None and row.ratio <= 1.0
        results.rows.append(row)
