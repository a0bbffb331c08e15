"""Part 1: round trip of a cheap op through the daemon vs the stdlib echo floor."""

from __future__ import annotations

from bench._client import RawClient
from bench._config import Config, progress
from bench._measure import interleaved, measurer, pinned
from bench._report import Results, latency_row
from bench._servers import PING, STATUS_LO, UP_MISSING, Servers, socket_of
from bench._stats import Summary, summarize_ns
from bench._system import Mode


def part_cheap_op(cfg: Config, servers: Servers, modes: list[Mode], results: Results) -> None:
    """Round trip of PING / STATUS / a failing UP: daemon vs the echo floor."""
    plan = [  # key, server, frame
        ("ping/echo", servers.echo, PING),
        ("ping/daemon", servers.daemon, PING),
        ("ping/quiet", servers.quiet, PING),
        ("ping/trio", servers.trio_echo, PING),
        ("status/echo", servers.echo, STATUS_LO),
        ("status/daemon", servers.daemon, STATUS_LO),
        ("up/echo", servers.echo, UP_MISSING),
        ("up/daemon", servers.daemon, UP_MISSING),
    ]
    labels = {
        "ping/echo": "PING: echo floor",
        "ping/daemon": "PING: daemon",
        "ping/quiet": "PING: daemon --log-level WARNING",
        "ping/trio": "PING: trio echo (reference)",
        "status/daemon": "STATUS: daemon",
        "up/daemon": "UP missing: daemon",
    }
    per: dict[tuple[str, str], list[Summary]] = {}
    pids = [service.pid for service in servers.all]
    for run in range(cfg.runs):
        for mode in modes:
            progress(f"part 1 cheap op: run {run + 1}/{cfg.runs}, {mode.name}")
            clients = {id(s): RawClient(socket_of(s)) for s in servers.all}
            try:
                with pinned(mode, pids):
                    targets = {
                        key: measurer(clients[id(server)], frame) for key, server, frame in plan
                    }
                    samples = interleaved(cfg, targets, cfg.latency_count)
            finally:
                for client in clients.values():
                    client.close()
            for key, values in samples.items():
                per.setdefault((key, mode.name), []).append(summarize_ns(values))
                if mode.name == results.primary_mode and key in labels:
                    results.samples.setdefault(f"cheap_op/{labels[key]}", []).extend(values)
    goal = "p50 <= 2.5x floor, p99 <= 3x own p50"
    for mode in modes:

        def runs(key: str, mode_name: str = mode.name) -> list[Summary]:
            return per[(key, mode_name)]

        rows = [
            latency_row("cheap_op", "PING: stdlib echo floor", mode.name, runs("ping/echo")),
            latency_row(
                "cheap_op",
                "PING: hycan-daemon",
                mode.name,
                runs("ping/daemon"),
                baseline=("echo floor", runs("ping/echo")),
                goal=goal,
                goal_id="1a cheap op PING",
            ),
            latency_row(
                "cheap_op",
                "PING: daemon, --log-level WARNING",
                mode.name,
                runs("ping/quiet"),
                baseline=("echo floor", runs("ping/echo")),
                note="no audit line; diagnostic",
            ),
            latency_row(
                "cheap_op",
                "PING: trio echo server",
                mode.name,
                runs("ping/trio"),
                baseline=("echo floor", runs("ping/echo")),
                note="event-loop reference; diagnostic",
            ),
            latency_row("cheap_op", "STATUS lo: stdlib echo floor", mode.name, runs("status/echo")),
            latency_row(
                "cheap_op",
                "STATUS lo: hycan-daemon",
                mode.name,
                runs("status/daemon"),
                baseline=("echo floor", runs("status/echo")),
                goal=goal,
                goal_id="1b cheap op STATUS",
            ),
            latency_row("cheap_op", "UP missing0: stdlib echo floor", mode.name, runs("up/echo")),
            latency_row(
                "cheap_op",
                "UP missing0: hycan-daemon",
                mode.name,
                runs("up/daemon"),
                baseline=("echo floor", runs("up/echo")),
                note="failing op; C++ daemon 72/176 µs",
            ),
        ]
        for row in rows:
            if row.goal_id is not None and row.ratio is not None and row.p99 is not None:
                row.met = row.ratio <= 2.5 and row.p99 <= 3 * row.median
        results.rows.extend(rows)
