"""Part 2: 64 concurrent clients in several processes, daemon vs the threaded echo."""

from __future__ import annotations

from bench._config import Config, progress
from bench._report import Results, Row
from bench._servers import PING, Servers, socket_of
from bench._stats import median
from bench._system import python_module
from bench._worker import WORKER_TIMEOUT, workers


def drive_load(cfg: Config, path: str) -> tuple[float, list[int]]:
    """64 clients over several processes for ``load_duration``: (ops/s, per-client ops)."""
    share, extra = divmod(cfg.load_clients, cfg.load_processes)
    sizes = [share + (1 if i < extra else 0) for i in range(cfg.load_processes)]
    argvs = [
        python_module(
            "bench._load",
            "--socket",
            path,
            "--conns",
            str(size),
            "--frame",
            PING.hex(),
            "--duration",
            str(cfg.load_duration),
        )
        for size in sizes
        if size
    ]
    with workers(argvs) as load:
        for worker in load:
            worker.wait_ready()
        for worker in load:
            worker.send("go")
        answers = [worker.answer(cfg.load_duration + WORKER_TIMEOUT) for worker in load]
    rate = sum(sum(a["counts"]) / a["elapsed"] for a in answers if a["elapsed"] > 0)
    return rate, [count for a in answers for count in a["counts"]]


def part_throughput(cfg: Config, servers: Servers, results: Results) -> None:
    """Closed-loop PING with 64 clients: daemon vs the threaded echo server."""
    rates: dict[str, list[float]] = {"echo": [], "daemon": []}
    spreads: dict[str, list[float | None]] = {"echo": [], "daemon": []}
    paths = {"echo": socket_of(servers.echo), "daemon": socket_of(servers.daemon)}
    for run in range(cfg.runs):
        order = ["echo", "daemon"] if run % 2 == 0 else ["daemon", "echo"]
        for key in order:
            progress(f"part 2 throughput: run {run + 1}/{cfg.runs}, {key}")
            rate, counts = drive_load(cfg, paths[key])
            rates[key].append(rate)
            spreads[key].append(max(counts) / min(counts) if min(counts) > 0 else None)

    def spread_text(key: str) -> tuple[str, float | None]:
        known = [s for s in spreads[key] if s is not None]
        if len(known) < len(spreads[key]):
            return "a client starved (0 ops)", None
        value = median(known)
        return f"max/min per client {value:.2f}", value

    shape = f"{cfg.load_clients} clients, {cfg.load_processes} procs"
    echo_note, _ = spread_text("echo")
    daemon_note, daemon_spread = spread_text("daemon")
    ratio = median([d / e for d, e in zip(rates["daemon"], rates["echo"], strict=True)])
    results.rows.append(
        Row(
            "throughput",
            f"{shape}: stdlib threaded echo",
            "-",
            "ops/s",
            median(rates["echo"]),
            note=echo_note,
            per_run=rates["echo"],
        )
    )
    results.rows.append(
        Row(
            "throughput",
            f"{shape}: hycan-daemon",
            "-",
            "ops/s",
            median(rates["daemon"]),
            ratio=ratio,
            baseline="threaded echo",
            goal=">= 0.8x echo, max/min per client <= 2",
            goal_id="2 throughput",
            met=ratio >= 0.8 and daemon_spread is not None and daemon_spread <= 2,
            note=f"{daemon_note}; C++ daemon 21.8k/s with 16 clients",
            per_run=rates["daemon"],
        )
    )
