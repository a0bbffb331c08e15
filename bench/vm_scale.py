"""Scale with real vcans (issue 18), run inside the qemu VM (``tests/vm/run_vm.py``).

Creates, brings up and deletes ``--count`` vcans (1,000 by default) four ways, in the
same three phases (all creates, all ups, all deletes), alternating the methods over
``--runs`` rounds: one ``ip -batch`` (the baseline), pyroute2 ``IPRoute`` in-process,
hycan-daemon with every request pipelined on one connection, and hycan-daemon with 8
``DaemonClient`` threads splitting the names. Prints one line ``HYCAN-VM-SCALE <json>``
(seconds per method and round) for :func:`bench.scale.part_vm_scale` on the host.

The VM emulates its CPU (TCG): absolute times are meaningless, ratios in one run are
what count, and both sides pay the emulation.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import hycan
from bench._client import response_length
from bench._system import Service, python_module, services
from hycan._protocol import Op, encode_request

MARK = "HYCAN-VM-SCALE"
CLIENTS = 8
Method = Callable[[Sequence[str]], None]


def with_ip_batch(names: Sequence[str]) -> None:
    """One ``ip -batch`` for the three phases."""
    lines = [f"link add {n} type vcan" for n in names]
    lines += [f"link set {n} up" for n in names]
    lines += [f"link del {n}" for n in names]
    subprocess.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=True)


def with_iproute(names: Sequence[str]) -> None:
    """pyroute2 ``IPRoute`` in-process, one object for all."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        for name in names:
            ipr.link("add", ifname=name, kind="vcan")
        indexes = [ipr.link_lookup(ifname=name)[0] for name in names]
        for index in indexes:
            ipr.link("set", index=index, state="up")
        for index in indexes:
            ipr.link("del", index=index)


def pipelined(path: str) -> Method:
    """Every request on one connection, sent without waiting; replies read by a thread."""

    def run(names: Sequence[str]) -> None:
        frames = [encode_request(Op.CREATE_VCAN, n.encode()) for n in names]
        frames += [encode_request(Op.INTERFACE_UP, n.encode()) for n in names]
        frames += [encode_request(Op.DELETE, n.encode()) for n in names]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            failed: list[bytes] = []
            reader = threading.Thread(target=_read_replies, args=(sock, len(frames), failed))
            reader.start()
            sock.sendall(b"".join(frames))
            reader.join()
        if failed:
            raise RuntimeError(f"{len(failed)} requests failed, first: {failed[0]!r}")

    return run


def _read_replies(sock: socket.socket, count: int, failed: list[bytes]) -> None:
    data = b""
    while count:
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the daemon closed the connection")
        data += chunk
        while (length := response_length(data)) is not None:
            if data[0] != 1:
                failed.append(data[:length])
            data, count = data[length:], count - 1


def threaded_clients(path: str) -> Method:
    """``CLIENTS`` threads, each a DaemonClient with its share of the names."""

    def run(names: Sequence[str]) -> None:
        shares = [names[i::CLIENTS] for i in range(CLIENTS)]
        phases: list[Callable[[hycan.DaemonClient, str], object]] = [
            hycan.DaemonClient.create,
            hycan.DaemonClient.up,
            hycan.DaemonClient.delete,
        ]
        errors: list[BaseException] = []

        def work(share: Sequence[str], start: threading.Barrier) -> None:
            try:
                with hycan.DaemonClient(path, timeout=120, fallback=False) as client:
                    client.ping()
                    start.wait()
                    for phase in phases:
                        for name in share:
                            phase(client, name)
            except BaseException as exc:  # reported by the caller
                errors.append(exc)

        start = threading.Barrier(CLIENTS)
        threads = [threading.Thread(target=work, args=(share, start)) for share in shares]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    return run


def main(argv: list[str] | None = None) -> int:
    """Entry point (root, where vcan exists)."""
    parser = argparse.ArgumentParser(prog="python -m bench.vm_scale")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    seconds: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="hycan-vm-scale-") as tmp, services() as started:
        path = os.path.join(tmp, "s.sock")
        argv_ = python_module("hycan.daemon.main", "--group", "", "--socket", path)
        daemon = Service("daemon", argv_, path + ".log")
        started.append(daemon)
        daemon.start(timeout=300)
        methods: dict[str, Method] = {
            "ip -batch": with_ip_batch,
            "pyroute2 IPRoute": with_iproute,
            "daemon, pipelined": pipelined(path),
            f"daemon, {CLIENTS} clients": threaded_clients(path),
        }
        for run in range(args.runs):
            for label, method in methods.items():
                names = [f"sc{run}x{i}" for i in range(args.count)]
                began = time.perf_counter()
                method(names)
                seconds.setdefault(label, []).append(time.perf_counter() - began)
                print(f"[vm-scale] run {run + 1}: {label} {seconds[label][-1]:.2f} s", flush=True)
        if "Traceback" in (log := Path(daemon.log_path).read_text(encoding="utf-8")):
            print(log[-2000:], file=sys.stderr)
    print(MARK, json.dumps({"count": args.count, "seconds": seconds}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
