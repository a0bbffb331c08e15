"""Part 5: PING through the trio client vs the sync client."""

from __future__ import annotations

import time

from bench._config import Config, progress
from bench._measure import interleaved, pinned
from bench._report import Results, latency_row
from bench._servers import Servers, socket_of
from bench._stats import Summary, summarize_ns, time_each
from bench._system import Mode

TRIO_LIMIT = 1.3  # issue 18: the trio client costs at most this much more than the sync one


def part_clients(cfg: Config, servers: Servers, modes: list[Mode], results: Results) -> None:
    """PING through the sync ``DaemonClient`` vs the trio ``AsyncDaemonClient``."""
    import trio

    from hycan import DaemonClient
    from hycan._async.client import AsyncDaemonClient

    path = socket_of(servers.daemon)
    clock = time.perf_counter_ns

    def sync_measure(count: int) -> list[int]:
        with DaemonClient(path, timeout=30) as client:
            return time_each(lambda _: client.ping(), count)

    def trio_measure(count: int) -> list[int]:
        async def measure() -> list[int]:
            samples = []
            async with AsyncDaemonClient(path, timeout=30) as client:
                for _ in range(count):
                    start = clock()
                    await client.ping()
                    samples.append(clock() - start)
            return samples

        return trio.run(measure)

    per: dict[tuple[str, str], list[Summary]] = {}
    for run in range(cfg.runs):
        for mode in modes:
            progress(f"part 5 clients: run {run + 1}/{cfg.runs}, {mode.name}")
            with pinned(mode, [servers.daemon.pid]):
                samples = interleaved(
                    cfg, {"sync": sync_measure, "trio": trio_measure}, cfg.latency_count
                )
            for key, values in samples.items():
                per.setdefault((key, mode.name), []).append(summarize_ns(values))
    for mode in modes:
        sync_runs = per[("sync", mode.name)]
        results.rows.append(latency_row("clients", "PING: sync DaemonClient", mode.name, sync_runs))
        row = latency_row(
            "clients",
            "PING: trio AsyncDaemonClient",
            mode.name,
            per[("trio", mode.name)],
            baseline=("sync client", sync_runs),
            goal=f"<= {TRIO_LIMIT}x the sync client",
            goal_id="5 trio client",
        )
        row.met = row.ratio is not None and row.ratio <= TRIO_LIMIT
        results.rows.append(row)
