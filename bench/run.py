"""Orchestration: start the servers, run the five parts, print the table, write the JSON.

Every server and worker is a subprocess started here and stopped in a ``finally``; the
netns of part 3 is deleted even when a part fails. Progress goes to stderr, the table to
stdout. The exit status is 0 when every part ran (goals met or not: this is a report, not
a test), 1 when a part failed.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import traceback
from dataclasses import asdict

from bench._config import DEFAULT_MODES, Config, make_config, progress
from bench._report import SECTIONS, Results, format_goals, format_table, plot, write_json
from bench._servers import start_servers
from bench._system import latency_modes, machine_info, netns_unavailable, services
from bench.cheap_op import part_cheap_op
from bench.clients import part_clients
from bench.netlink import part_netlink
from bench.scale import part_scale, part_vm_scale
from bench.startup import part_startup
from bench.throughput import part_throughput


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure hycan side by side with its baselines; print a table, write JSON.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run (<60 s)")
    parser.add_argument("--runs", type=int, help="repetitions; medians are taken (default 5)")
    parser.add_argument("--json", default="hycan-bench.json", metavar="PATH", help="JSON output")
    parser.add_argument("--plot", metavar="PATH", help="PNG of latency distributions (matplotlib)")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)}",
    )
    parser.add_argument(
        "--modes",
        default=",".join(DEFAULT_MODES),
        help="latency pinning modes: pinned (client+server on one CPU), split, unpinned",
    )
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients (part 2)")
    parser.add_argument("--load-processes", type=int, default=4, help="client processes (part 2)")
    args = parser.parse_args(argv)
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.clients < 1 or args.load_processes < 1:
        parser.error("--clients and --load-processes must be at least 1")
    return args


def run_sections(cfg: Config, workdir: str, results: Results) -> bool:
    """Run the selected parts; a part that fails is recorded as skipped. True if all ran."""
    modes, mode_notes = latency_modes(cfg.modes)
    for note in mode_notes:
        results.note("cheap_op", note)
    if not modes:
        modes, _ = latency_modes(["unpinned"])
    results.primary_mode = "pinned" if any(m.name == "pinned" for m in modes) else modes[0].name
    results.meta["modes"] = {mode.name: mode.description for mode in modes}
    for section in SECTIONS:
        if section not in cfg.sections:
            results.skipped[section] = "not selected (--sections)"
    if section_needs_servers := [s for s in cfg.sections if s != "netlink"]:
        progress(f"starting servers for {', '.join(section_needs_servers)}")
    ok = True
    with services() as started:
        servers = start_servers(workdir, started) if section_needs_servers else None
        for section in SECTIONS:
            if section not in cfg.sections:
                continue
            try:
                if section == "netlink":
                    reason = netns_unavailable()
                    if reason is not None:
                        print(f"part 3 netlink skipped: {reason}", flush=True)
                        results.skipped[section] = reason
                        continue
                    part_netlink(cfg, workdir, modes, results)
                    part_scale(cfg, workdir, modes, results)
                    part_vm_scale(cfg, results)
                    continue
                assert servers is not None
                if section == "cheap_op":
                    part_cheap_op(cfg, servers, modes, results)
                elif section == "throughput":
                    part_throughput(cfg, servers, results)
                elif section == "startup":
                    part_startup(cfg, servers, results)
                elif section == "clients":
                    part_clients(cfg, servers, modes, results)
            except Exception as exc:  # a broken part must not hide the others
                traceback.print_exc()
                results.skipped[section] = f"failed: {type(exc).__name__}: {exc}"
                results.rows = [row for row in results.rows if row.section != section]
                ok = False
    return ok


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench``."""
    args = parse_args(argv)
    cfg = make_config(args)
    results = Results(meta={**machine_info(), "config": asdict(cfg)})
    started = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="hycan-bench-")
    try:
        ok = run_sections(cfg, workdir, results)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results.meta["seconds"] = round(time.monotonic() - started, 1)
    meta = results.meta
    print(
        f"\nhycan bench ({'quick' if cfg.quick else 'full'}, {cfg.runs} runs, medians): "
        f"{meta['nproc']} CPUs {meta['cpu_model']}, kernel {meta['kernel']}, "
        f"Python {meta['python']}, {meta['seconds']} s"
    )
    for name, description in meta.get("modes", {}).items():
        print(f"  mode {name}: {description}")
    print()
    print(format_table(results))
    print()
    print(format_goals(results))
    for section, notes in results.notes.items():
        for note in notes:
            print(f"note ({section}): {note}")
    write_json(results, args.json)
    print(f"JSON written to {args.json}")
    if args.plot:
        reason = plot(results, args.plot)
        print(f"plot not written: {reason}" if reason else f"plot written to {args.plot}")
    return 0 if ok else 1
