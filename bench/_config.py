"""Counts and durations of one run (full or ``--quick``), and the progress lines."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

DEFAULT_MODES = ("pinned", "split", "unpinned")


@dataclass(frozen=True, slots=True)
class Config:
    """Counts and durations of one benchmark run."""

    quick: bool
    runs: int
    latency_count: int  # round trips per target, mode and run (parts 1 and 5)
    chunks: int  # targets are measured interleaved, in this many blocks each
    warmup: int
    load_processes: int
    load_clients: int
    load_duration: float  # seconds per server and run
    netlink_count: int  # up/down toggles per method, mode and run
    ip_count: int  # toggles with a spawned `ip link` per mode and run
    startup_count: int  # process starts per command and run
    modes: tuple[str, ...]
    sections: tuple[str, ...]


def make_config(args: argparse.Namespace) -> Config:
    """Full or ``--quick`` counts, with the command line's overrides."""
    if args.quick:
        counts: dict[str, Any] = {
            "latency_count": 200,
            "chunks": 2,
            "warmup": 20,
            "load_duration": 0.5,
            "netlink_count": 40,
            "ip_count": 6,
            "startup_count": 2,
        }
    else:
        counts = {
            "latency_count": 5000,
            "chunks": 5,
            "warmup": 300,
            "load_duration": 3.0,
            "netlink_count": 2000,
            "ip_count": 200,
            "startup_count": 15,
        }
    return Config(
        quick=args.quick,
        runs=args.runs if args.runs is not None else (1 if args.quick else 5),
        load_processes=args.load_processes,
        load_clients=args.clients,
        modes=tuple(args.modes.split(",")),
        sections=tuple(args.sections.split(",")),
        **counts,
    )


def progress(text: str) -> None:
    """A progress line on stderr."""
    print(f"[bench] {text}", file=sys.stderr, flush=True)
