"""Orchestration: start the servers, run the five parts, print the table, write the JSON.

Every server and worker is a subprocess started here and stopped in a ``finally``; the
netns of part 3 is deleted even when a part fails. Progress goes to stderr, the table to
stdout. The exit status is 0 when every part ran (goals met or not: this is a report, not
a test), 1 when a part failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import hycan
from bench import _oneshot
from bench._client import RawClient
from bench._report import (
    SECTIONS,
    Results,
    Row,
    format_goals,
    format_table,
    latency_row,
    plot,
    write_json,
)
from bench._stats import Summary, median, summarize_ns, time_each
from bench._system import (
    Mode,
    Service,
    latency_modes,
    machine_info,
    netns_unavailable,
    pin_process,
    pin_self,
    python_module,
    reap,
    services,
    throwaway_netns,
)
from hycan._protocol import Op, encode_request

PING = encode_request(Op.PING, b"")
STATUS_LO = encode_request(Op.STATUS, b"lo")
UP_MISSING = encode_request(Op.INTERFACE_UP, b"missing0")
DEFAULT_MODES = ("pinned", "split", "unpinned")
WORKER_TIMEOUT = 120.0  # seconds any single worker answer may take before we give up


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


# --- shared servers ---------------------------------------------------------------------


@dataclass
class Servers:
    """The memory-backend daemons and the echo baselines shared by parts 1, 2, 4 and 5."""

    daemon: Service  # default options: INFO, one audit line per request (as deployed)
    quiet: Service  # --log-level WARNING: no audit line (shows what logging costs)
    echo: Service  # stdlib thread-per-connection: the floor
    trio_echo: Service  # the same on trio streams: what the event loop alone costs
    replies: dict[int, bytes]

    @property
    def all(self) -> list[Service]:
        """Every shared server (for pinning)."""
        return [self.daemon, self.quiet, self.echo, self.trio_echo]


def socket_of(service: Service) -> str:
    """The socket path a service listens on (its argv's ``--socket`` value)."""
    return service.argv[service.argv.index("--socket") + 1]


def start_servers(workdir: str, started: list[Service]) -> Servers:
    """Start both daemons, ask one for its replies, start the echo servers with them."""

    def daemon(name: str, *extra: str) -> Service:
        argv = python_module(
            "hycan.daemon.main",
            "--backend",
            "memory",
            "--group",
            "",
            "--socket",
            os.path.join(workdir, f"{name}.sock"),
            *extra,
        )
        service = Service(name, argv, os.path.join(workdir, f"{name}.log"))
        started.append(service)
        return service.start()

    main = daemon("daemon")
    quiet = daemon("daemon-quiet", "--log-level", "WARNING")
    client = RawClient(socket_of(main))
    try:
        replies = {frame[0]: client.roundtrip(frame) for frame in (PING, STATUS_LO, UP_MISSING)}
    finally:
        client.close()
    reply_args = [f"--reply={op}={reply.hex()}" for op, reply in replies.items()]

    def echo(kind: str) -> Service:
        path = os.path.join(workdir, f"echo-{kind}.sock")
        argv = python_module("bench._echo", "--kind", kind, "--socket", path, *reply_args)
        service = Service(f"{kind} echo", argv, os.path.join(workdir, f"echo-{kind}.log"))
        started.append(service)
        return service.start()

    return Servers(main, quiet, echo("threaded"), echo("trio"), replies)


@contextlib.contextmanager
def pinned(mode: Mode, pids: Sequence[int]) -> Iterator[None]:
    """Pin the servers (``taskset -a -p``) and this process for one mode; undo after."""
    if mode.server is not None:
        for pid in pids:
            pin_process(pid, mode.server)
    pin_self(mode.client)
    try:
        yield
    finally:
        pin_self(None)
        if mode.server is not None:
            for pid in pids:
                pin_process(pid, None)


def interleaved(
    cfg: Config, targets: dict[str, Callable[[int], list[int]]], count: int
) -> dict[str, list[int]]:
    """Warm every target up, then measure them in rotating blocks (same noise for all)."""
    for measure in targets.values():
        measure(cfg.warmup)
    samples: dict[str, list[int]] = {key: [] for key in targets}
    keys = list(targets)
    per_chunk = max(1, count // cfg.chunks)
    for chunk in range(cfg.chunks):
        shift = chunk % len(keys)
        for key in keys[shift:] + keys[:shift]:
            samples[key] += targets[key](per_chunk)
    return samples


# --- part 1: cheap op --------------------------------------------------------------------


def measurer(client: RawClient, frame: bytes) -> Callable[[int], list[int]]:
    """``count -> samples`` for one client and request frame."""
    return lambda count: client.measure(frame, count)


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


# --- part 2: throughput ------------------------------------------------------------------


class Worker:
    """A subprocess speaking a line protocol: it prints ``ready``, then one line per command."""

    def __init__(self, argv: Sequence[str]) -> None:
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,  # a file, not a pipe: a chatty worker never blocks
            text=True,
        )

    def _line(self, timeout: float) -> str:
        stdout: IO[str] | None = self.proc.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        line = stdout.readline() if ready else ""
        if not line:
            self.stop()
            self._stderr.seek(0)
            err = self._stderr.read().strip()[-500:]
            raise RuntimeError(f"worker {self.proc.args!r} gave no answer: {err}")
        return line

    def wait_ready(self, timeout: float = WORKER_TIMEOUT) -> None:
        """Block until the worker printed ``ready``."""
        line = self._line(timeout)
        if line.strip() != "ready":
            raise RuntimeError(f"worker said {line!r} instead of ready")

    def send(self, command: str) -> None:
        """Write one command line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout: float = WORKER_TIMEOUT) -> Any:
        """Read one JSON answer line."""
        return json.loads(self._line(timeout))

    def measurer(self, cpus: str) -> Callable[[int], list[int]]:
        """For an ``_nlworker``: run ``count`` toggles pinned to ``cpus`` ("-": unpinned)."""

        def measure(count: int) -> list[int]:
            self.send(f"{count + count % 2} {cpus}")
            samples: list[int] = self.answer()
            return samples

        return measure

    def stop(self, timeout: float = 10.0) -> None:
        """Close stdin (the worker's cue to exit); kill it if it does not."""
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        reap(self.proc, timeout)

    def close_log(self) -> None:
        """Release the stderr file (after ``stop``)."""
        self._stderr.close()


@contextlib.contextmanager
def workers(argvs: Sequence[Sequence[str]]) -> Iterator[list[Worker]]:
    """Start workers; every one is stopped on exit."""
    started: list[Worker] = []
    try:
        for argv in argvs:
            started.append(Worker(argv))
        yield started
    finally:
        for worker in started:
            worker.stop()
            worker.close_log()


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


# --- part 3: netlink ---------------------------------------------------------------------


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
        daemon_argv = python_module(
            "hycan.daemon.main",
            "--backend",
            "netlink",
            "--group",
            "",
            "--allow-iface",
            "veth*",
            "--socket",
            path,
        )
        daemon = Service("netlink daemon", [*exec_in, *daemon_argv], path + ".log")
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
                            "daemon": _toggler(client),
                            "iproute": by_method["iproute"].measurer(cpus),
                            "backend": by_method["backend"].measurer(cpus),
                            "daemon_fail": measurer(raw, UP_MISSING),
                            "threaded": _toggler(threaded_client),
                            "threaded_fail": measurer(threaded_raw, UP_MISSING),
                        }
                        if cref_binary is not None:
                            targets["cref"] = _oneshot_measurer(cref_path, _TOGGLE_FRAMES)
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


def _toggler(client: hycan.DaemonClient) -> Callable[[int], list[int]]:
    """Up/down of veth0 through the daemon with the sync client, per-call times in ns."""

    def toggle(i: int) -> None:
        if i % 2 == 0:
            client.up("veth0")
        else:
            client.down("veth0")

    return lambda count: time_each(toggle, count)


def _oneshot_measurer(path: str, frames: Sequence[bytes]) -> Callable[[int], list[int]]:
    """Calls to the C reference the C++ client's way, cycling through ``frames``."""
    return lambda count: time_each(
        lambda i: _oneshot.roundtrip(path, frames[i % len(frames)]), count
    )


_TOGGLE_FRAMES = (
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
    if with_cref:
        beaten = [
            latency_row(
                "netlink",
                f"up/down: {_CREF}",
                mode,
                runs("cref"),
                baseline=daemon,
                goal=">= 1.0x the daemon (hycan faster)",
                goal_id="C++ design: up/down",
            ),
            latency_row(
                "netlink",
                f"UP missing0: {_CREF}",
                mode,
                runs("cref_fail"),
                baseline=("daemon", runs("daemon_fail")),
                goal=">= 1.0x the daemon (hycan faster)",
                goal_id="C++ design: failing op",
            ),
        ]
        for row in beaten:
            row.met = row.ratio is not None and row.ratio >= 1.0
        rows.extend(beaten)
    return rows


# --- part 4: start-up --------------------------------------------------------------------


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


# --- part 5: clients ---------------------------------------------------------------------


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
        results.rows.append(
            latency_row(
                "clients",
                "PING: trio AsyncDaemonClient",
                mode.name,
                per[("trio", mode.name)],
                baseline=("sync client", sync_runs),
            )
        )


# --- main --------------------------------------------------------------------------------


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
