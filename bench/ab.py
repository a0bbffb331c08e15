"""Before/after of one lever: the daemon of an earlier commit beside this tree's, same run.

``python -m bench.ab REV [--after REV2]`` (root) checks ``REV`` out into a temporary git
worktree, starts its hycan-daemon and this tree's (or ``REV2``'s; ``PYTHONPATH`` picks the
tree) in one throwaway netns with a veth pair, pins them and this process to one CPU (the
bench's ``pinned`` mode), and times the same calls against both in rotating blocks, so
the ratio after/before carries the run's noise on both sides. The clients are always
this tree's; a lever in the client library is measured by running a driver under each
tree instead (docs/perf.md says how each lever's row was made).

Calls (``--calls``): ``ping``, ``fail`` (UP of a missing name), ``toggle`` (up/down of
veth0) on one persistent raw connection; the same with ``-cpc`` for a new connection per
call, the C++ client's way; with ``-client`` through the sync ``DaemonClient``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import hycan
from bench import _oneshot
from bench._client import RawClient
from bench._measure import pinned
from bench._servers import UP_MISSING
from bench._stats import median, time_each
from bench._system import Mode, Service, allowed_cpus, services, throwaway_netns
from bench.netlink import PING_FRAME, TOGGLE_FRAMES, failer, netlink_daemon, toggler

ROOT = Path(__file__).resolve().parent.parent
FRAMES = {"ping": [PING_FRAME], "fail": [UP_MISSING], "toggle": list(TOGGLE_FRAMES)}
DEFAULT_CALLS = "ping-cpc,fail-cpc,toggle-cpc,ping,fail,toggle,fail-client,toggle-client"


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    parser.add_argument("rev", help="the commit to compare with (e.g. HEAD~1)")
    parser.add_argument("--after", metavar="REV", help="a commit instead of this tree")
    parser.add_argument("--calls", default=DEFAULT_CALLS, help=f"default {DEFAULT_CALLS}")
    parser.add_argument("--count", type=int, default=500, help="calls per block")
    parser.add_argument("--rounds", type=int, default=6, help="blocks per call and daemon")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (a throwaway network namespace)")
    calls = args.calls.split(",")
    with contextlib.ExitStack() as stack:
        before = stack.enter_context(_worktree(args.rev))
        after = stack.enter_context(_worktree(args.after)) if args.after else ROOT
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="hycan-ab-"))
        p50 = _measure({"before": before, "after": after}, calls, tmp, args.count, args.rounds)
    print(f"| call | {args.rev} p50 | {args.after or 'this tree'} p50 | after/before |")
    print("|---|---|---|---|")
    for call in calls:
        old, new = p50[("before", call)], p50[("after", call)]
        print(f"| {call} | {old:.1f} µs | {new:.1f} µs | {new / old:.2f}x |")
    return 0


@contextlib.contextmanager
def _worktree(rev: str) -> Iterator[Path]:
    """``rev`` checked out in a temporary worktree, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="hycan-ab-tree-"))
    git = ["git", "-C", str(ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", "-q", str(path), rev], check=True)
    try:
        yield path
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(path)], check=False)


def _measure(
    trees: dict[str, Path], calls: list[str], tmp: str, count: int, rounds: int
) -> dict[tuple[str, str], float]:
    cpu = frozenset({allowed_cpus()[-1]})
    mode = Mode("pinned", cpu, cpu, f"everything on CPU {min(cpu)}")
    samples: dict[tuple[str, str], list[int]] = {}
    with throwaway_netns() as netns, services() as started, contextlib.ExitStack() as stack:
        paths = {}
        for label, tree in trees.items():
            path = os.path.join(tmp, f"{label}.sock")
            env = ["env", f"PYTHONPATH={tree / 'src'}"]
            argv = ["ip", "netns", "exec", netns, *env, *netlink_daemon(path)]
            service = Service(label, argv, path + ".log")
            started.append(service)
            service.start()
            paths[label] = path
        targets = {
            (label, call): _target(stack, path, call)
            for label, path in paths.items()
            for call in calls
        }
        with pinned(mode, [service.pid for service in started]):
            for measure in targets.values():
                measure(count // 5)  # warm-up
            for _ in range(rounds):
                for key, measure in targets.items():
                    samples.setdefault(key, []).extend(measure(count))
    return {key: median(values) / 1000 for key, values in samples.items()}


def _target(stack: contextlib.ExitStack, path: str, call: str) -> Callable[[int], list[int]]:
    base, _, how = call.partition("-")
    frames = FRAMES[base]
    if how == "cpc":
        return lambda count: time_each(
            lambda i: _oneshot.roundtrip(path, frames[i % len(frames)]), count
        )
    if how == "client":
        client = stack.enter_context(hycan.DaemonClient(path, timeout=30))
        if base == "toggle":
            return toggler(client)
        if base == "fail":
            return failer(client)
        return lambda count: time_each(lambda _: client.ping(), count)
    raw = stack.enter_context(contextlib.closing(RawClient(path)))
    return lambda count: time_each(lambda i: raw.roundtrip(frames[i % len(frames)]), count)


if __name__ == "__main__":
    sys.exit(main())
