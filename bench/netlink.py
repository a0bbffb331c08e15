"""Part 3 (root): real veth up/down in a throwaway netns, daemon vs in-process
pyroute2, spawned ``ip link`` and the C reference of the C++ design.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import hycan
from bench import _oneshot
from bench._client import RawClient
from bench._config import Config, progress
from bench._measure import interleaved, measurer, pinned
from bench._report import Results, Row, latency_row
from bench._servers import UP_MISSING
from bench._stats import Summary, median, summarize_ns, time_each
from bench._system import Mode, Service, pin_process, python_module, reap, services, throwaway_netns
from bench._worker import workers
from hycan._protocol import Op, encode_request


def part_netlink(cfg: Config, workdir: str, modes: list[Mode], results: Results) -> None:
    """Real veth up/down in a throwaway netns: daemon vs IPRoute vs `ip link` vs the C
    reference of the C++ design; and the failing op (UP missing0) on the real kernel."""

    methods = ("iproute", "ip", "backend")
    per: dict[tuple[str, str], list[Summary]] = {}
    path = os.path.join(workdir, "netlink.sock")
    cref_path = os.path.join(workdir, "oneshot.sock")
    cref_binary, cref_missing = _oneshot.build(workdir)
    if cref_missing is not None:
        results.note("netlink", f"C reference rows skipped: {cref_missing}")
    with throwaway_netns() as netns, services() as started:
        progress(f"part 3 netlink: netns {netns}")
        exec_in = ["ip", "netns", "exec", netns]
        daemon = Service("netlink daemon", [*exec_in, *netlink_daemon(path)], path + ".log")
        started.append(daemon)
        daemon.start()
        threaded_path = os.path.join(workdir, "threaded.sock")
        threaded_argv = python_module(
            "bench._threaded", "--socket", threaded_path, "--allow-iface", "veth*"
        )
        threaded = Service("threaded", [*exec_in, *threaded_argv], threaded_path + ".log")
        started.append(threaded)
        threaded.start()
        server_pids = [daemon.pid, threaded.pid]
        if cref_binary is not None:
            cref = Service("C reference", [*exec_in, cref_binary, cref_path], cref_path + ".log")
            started.append(cref)
            cref.start()
            server_pids.append(cref.pid)
        worker_argvs = [
            [*exec_in, *python_module("bench._nlworker", "--method", m)] for m in methods
        ]
        with (
            _hammer(path) as hammer,
            workers(worker_argvs) as running,
            hycan.DaemonClient(path, timeout=30) as client,
            contextlib.closing(RawClient(path)) as raw,
            hycan.DaemonClient(threaded_path, timeout=30) as threaded_client,
            contextlib.closing(RawClient(threaded_path)) as threaded_raw,
        ):
            by_method = dict(zip(methods, running, strict=True))
            for worker in running:
                worker.wait_ready()

            for run in range(cfg.runs):
                for mode in modes:
                    progress(f"part 3 netlink: run {run + 1}/{cfg.runs}, {mode.name}")
                    cpus = ",".join(map(str, sorted(mode.client))) if mode.client else "-"
                    with pinned(mode, server_pids):
                        targets = {
                            "daemon": toggler(client),
                            "iproute": by_method["iproute"].measurer(cpus),
                            "backend": by_method["backend"].measurer(cpus),
                            "daemon_fail": measurer(raw, UP_MISSING),
                            "threaded": toggler(threaded_client),
                            "threaded_fail": measurer(threaded_raw, UP_MISSING),
                            "ping_idle": _beside(hammer, mode, False, measurer(raw, PING_FRAME)),
                            "ping_busy": _beside(hammer, mode, True, measurer(raw, PING_FRAME)),
                        }
                        if cref_binary is not None:
                            targets["client_fail"] = failer(client)
                            targets["cpc"] = _oneshot_measurer(path, TOGGLE_FRAMES)
                            targets["cpc_fail"] = _oneshot_measurer(path, [UP_MISSING])
                            targets["cref"] = _oneshot_measurer(cref_path, TOGGLE_FRAMES)
                            targets["cref_fail"] = _oneshot_measurer(cref_path, [UP_MISSING])
                        samples = interleaved(cfg, targets, cfg.netlink_count)
                        samples["ip"] = by_method["ip"].measurer(cpus)(cfg.ip_count)
                    for key, values in samples.items():
                        per.setdefault((key, mode.name), []).append(summarize_ns(values))
                        if mode.name == results.primary_mode and key in _PLOTTED:
                            plotted = f"netlink/{_PLOTTED[key]}"
                            results.samples.setdefault(plotted, []).extend(values)
        for line in Path(daemon.log_path).read_text(encoding="utf-8").splitlines():
            if " ERROR " in line or line.startswith("Traceback"):
                results.note("netlink", f"daemon log: {line}")
    for mode in modes:
        results.rows.extend(_netlink_rows(mode.name, per, with_cref=cref_binary is not None))


@contextlib.contextmanager
def _hammer(path: str) -> Iterator[subprocess.Popen[str]]:
    """Another client toggling veth1 through the daemon without pause, stopped (SIGSTOP)
    except while :func:`_beside` lets it run."""
    proc = subprocess.Popen(python_module("bench._hammer", path, "veth1"), text=True)
    try:
        proc.send_signal(signal.SIGSTOP)
        yield proc
    finally:
        proc.kill()
        reap(proc, 10.0)


def _beside(
    hammer: subprocess.Popen[str], mode: Mode, running: bool, measure: Callable[[int], list[int]]
) -> Callable[[int], list[int]]:
    """``measure``, with the hammer running or stopped. It runs on the CPUs the measuring
    client does not use (if there are any): the PING then waits for the daemon's work on
    the hammer's requests, not for the hammer's own time on the client's CPU."""
    cpus = frozenset(os.sched_getaffinity(0)) - (mode.client or frozenset())
    elsewhere = cpus if mode.client is not None and cpus else None

    def measured(count: int) -> list[int]:
        if not running:
            return measure(count)
        pin_process(hammer.pid, elsewhere)
        hammer.send_signal(signal.SIGCONT)
        try:
            return measure(count)
        finally:
            hammer.send_signal(signal.SIGSTOP)

    return measured


def netlink_daemon(path: str) -> list[str]:
    """argv of hycan-daemon on the netlink backend, allowed to change the veth links."""
    return python_module(
        "hycan.daemon.main", "--backend", "netlink", "--group", "", "--allow-iface", "veth*",
        "--socket", path,
    )  # fmt: skip


def toggler(client: hycan.DaemonClient) -> Callable[[int], list[int]]:
    """Up/down of veth0 through the daemon with the sync client, per-call times in ns."""

    def toggle(i: int) -> None:
        if i % 2 == 0:
            client.up("veth0")
        else:
            client.down("veth0")

    return lambda count: time_each(toggle, count)


def failer(client: hycan.DaemonClient) -> Callable[[int], list[int]]:
    """UP of a missing name with the sync client (it raises), per-call times in ns."""

    def fail(_: int) -> None:
        try:
            client.up("missing0")
        except hycan.InterfaceNotFound:
            return
        raise AssertionError("UP missing0 succeeded")

    return lambda count: time_each(fail, count)


def _oneshot_measurer(path: str, frames: Sequence[bytes]) -> Callable[[int], list[int]]:
    """Calls to the C reference the C++ client's way, cycling through ``frames``."""
    return lambda count: time_each(
        lambda i: _oneshot.roundtrip(path, frames[i % len(frames)]), count
    )


PING_FRAME = encode_request(Op.PING, b"")
TOGGLE_FRAMES = (
    encode_request(Op.INTERFACE_UP, b"veth0"),
    encode_request(Op.INTERFACE_DOWN, b"veth0"),
)
_PLOTTED = {
    "daemon": "up/down: daemon",
    "iproute": "up/down: pyroute2 IPRoute",
    "backend": "up/down: NetlinkBackend in-process",
    "ip": "up/down: ip link (spawned)",
    "cref": "up/down: C reference (C++ design)",
}
_THREADED = "the daemon's request path on a blocking thread per connection, no trio"
_CREF = "C reference of the C++ daemon's design (new connection per call, netlink socket per op)"


def _netlink_rows(
    mode: str, per: dict[tuple[str, str], list[Summary]], *, with_cref: bool
) -> list[Row]:
    def runs(key: str) -> list[Summary]:
        return per[(key, mode)]

    iproute = ("IPRoute", runs("iproute"))
    daemon = ("daemon", runs("daemon"))
    rows = [
        latency_row(
            "netlink", "up/down: pyroute2 IPRoute, in-process, reused", mode, runs("iproute")
        ),
        latency_row(
            "netlink",
            "up/down: through hycan-daemon (DaemonClient)",
            mode,
            runs("daemon"),
            baseline=iproute,
            goal="<= 1.0x IPRoute",
            goal_id="3a up/down vs IPRoute",
            note="C++ daemon 108/250 µs on its machine",
        ),
        latency_row(
            "netlink",
            "up/down: `ip link set` spawned",
            mode,
            runs("ip"),
            baseline=daemon,
            goal=">= 8x the daemon",
            goal_id="3b up/down vs ip link",
        ),
        latency_row(
            "netlink",
            "up/down: hycan NetlinkBackend, in-process",
            mode,
            runs("backend"),
            baseline=iproute,
            note="no daemon, no policy lookup; diagnostic",
        ),
    ]
    rows[1].met = rows[1].ratio is not None and rows[1].ratio <= 1.0
    rows[2].met = rows[2].ratio is not None and rows[2].ratio >= 8.0
    fail = latency_row(
        "netlink",
        "UP missing0: hycan-daemon, netlink backend (failing op, raw client loop)",
        mode,
        runs("daemon_fail"),
        note="C++ daemon 72/176 µs on its machine",
    )
    rows.append(fail)
    rows += [
        latency_row(
            "netlink",
            f"up/down: {_THREADED}",
            mode,
            runs("threaded"),
            baseline=daemon,
            note="diagnostic",
        ),
        latency_row(
            "netlink",
            f"UP missing0: {_THREADED}",
            mode,
            runs("threaded_fail"),
            baseline=("daemon", runs("daemon_fail")),
            note="diagnostic",
        ),
    ]
    rows.append(_head_of_line_row(mode, runs))
    if with_cref:
        rows.extend(_cref_rows(mode, runs))
    return rows


def _head_of_line_row(mode: str, runs: Callable[[str], list[Summary]]) -> Row:
    """PING p99 while another client toggles without pause, vs idle (issue 18: <= 2x)."""
    idle, busy = runs("ping_idle"), runs("ping_busy")
    row = latency_row(
        "netlink",
        "PING (raw client) while another client toggles veth1 without pause",
        mode,
        busy,
        goal=f"p99 <= {_HOL_LIMIT}x the idle p99",
        goal_id="no head-of-line blocking",
        note=f"idle: p50 {median([s.p50 for s in idle]):.1f} µs, "
        f"p99 {median([s.p99 for s in idle]):.1f} µs",
    )
    row.ratio = median([b.p99 / i.p99 for b, i in zip(busy, idle, strict=True)])
    row.baseline = "idle p99"
    row.met = row.ratio <= _HOL_LIMIT
    return row


_HOL_LIMIT = 2.0


def _cref_rows(mode: str, runs: Callable[[str], list[Summary]]) -> list[Row]:
    """hycan against the C reference of the C++ design (issue 18's goals): the C++
    client's connection-per-call pattern on both daemons, and hycan's own sync client."""
    cref = ("C reference", runs("cref"))
    cref_fail = ("C reference", runs("cref_fail"))
    goals = [
        ("cpc", cref, 1.0, "up/down: connection per call (the C++ client's way) -> hycan-daemon",
         "C++ client: up/down"),
        ("cpc_fail", cref_fail, 1.0, "UP missing0: connection per call -> hycan-daemon",
         "C++ client: failing op"),
        ("daemon", cref, 0.7, "up/down: hycan DaemonClient (persistent) -> hycan-daemon",
         "C++ design: up/down"),
        ("client_fail", cref_fail, 0.5, "UP missing0: hycan DaemonClient -> hycan-daemon",
         "C++ design: failing op"),
    ]  # fmt: skip
    rows = [
        latency_row("netlink", f"up/down: {_CREF}", mode, runs("cref"), note="the baseline"),
        latency_row("netlink", f"UP missing0: {_CREF}", mode, runs("cref_fail")),
    ]
    for key, baseline, limit, name, goal_id in goals:
        row = latency_row(
            "netlink",
            name,
            mode,
            runs(key),
            baseline=baseline,
            goal=f"<= {limit}x the C reference",
            goal_id=goal_id,
        )
        row.met = row.ratio is not None and row.ratio <= limit
        rows.append(row)
    return rows
