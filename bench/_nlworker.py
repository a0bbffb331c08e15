"""Part 3 worker, run inside the throwaway netns: toggle a link up/down in-process.

``python -m bench._nlworker --method iproute|ip|backend --iface veth0`` sets itself
up (imports, pyroute2 ``IPRoute`` opened once and the index looked up once, as a program
doing it itself would), prints ``ready``, then answers each stdin line ``COUNT CPUS``
(``CPUS`` is ``-`` or ``0,1``) by pinning itself, toggling ``COUNT`` times (up, down, up,
...) and printing the per-toggle times in nanoseconds as one JSON list.

- ``iproute``: ``IPRoute().link("set", index=..., state=...)``, the object reused.
- ``ip``: ``ip link set dev IFACE up|down`` as a subprocess each time.
- ``backend``: hycan's own ``NetlinkBackend.set_up`` in-process (no daemon, no policy).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable

from bench._stats import time_each
from bench._system import pin_self

MAX_COMMANDS = 10_000


def toggler(method: str, iface: str) -> Callable[[bool], None]:
    """A function that sets ``iface`` up (True) or down (False) with ``method``."""
    if method == "iproute":
        from pyroute2 import IPRoute

        ipr = IPRoute()
        index = ipr.link_lookup(ifname=iface)[0]

        def with_iproute(up: bool) -> None:
            ipr.link("set", index=index, state="up" if up else "down")

        return with_iproute
    if method == "ip":

        def with_ip(up: bool) -> None:
            subprocess.run(
                ["ip", "link", "set", "dev", iface, "up" if up else "down"],
                check=True,
                stdout=subprocess.DEVNULL,
            )

        return with_ip
    if method == "backend":
        from hycan.backends.netlink import NetlinkBackend

        backend = NetlinkBackend()
        link = backend.resolve(iface)  # once, as the daemon's cache does
        return lambda up: backend.set_up(link, up)
    raise ValueError(f"unknown method {method!r}")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench._nlworker")
    parser.add_argument("--method", choices=("iproute", "ip", "backend"), required=True)
    parser.add_argument("--iface", default="veth0")
    args = parser.parse_args(argv)
    toggle = toggler(args.method, args.iface)
    print("ready", flush=True)
    for _ in range(MAX_COMMANDS):
        line = sys.stdin.readline()
        if not line.strip():
            break
        count_text, cpus_text = line.split()
        pin_self(None if cpus_text == "-" else frozenset(map(int, cpus_text.split(","))))
        samples = time_each(lambda i: toggle(i % 2 == 0), int(count_text))
        print(json.dumps(samples), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
