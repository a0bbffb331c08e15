"""Throughput worker: one process driving N connections in a closed loop (stdlib only).

``python -m bench._load --socket PATH --conns N --frame HEX --duration S`` connects
N sockets, prints ``ready``, waits for a line on stdin, then keeps exactly one request in
flight on every connection for ``duration`` seconds (a ``selectors`` loop, no threads, so
the workers' own overhead stays small), and prints one JSON line: completed responses per
connection and the measured elapsed time. Loops are bounded by the deadline and ``--max-ops``.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import time

from bench._client import RECV_SIZE, response_length


def run_load(
    path: str, conns: int, frame: bytes, duration: float, max_ops: int
) -> tuple[list[int], float]:
    """The closed loop, after the ready/go handshake on stdin/stdout."""
    socks = []
    for _ in range(conns):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        sock.setblocking(False)
        socks.append(sock)
    print("ready", flush=True)
    if not sys.stdin.readline():
        return [0] * conns, 0.0
    counts = [0] * conns
    buffers = [b""] * conns
    selector = selectors.DefaultSelector()
    for index, sock in enumerate(socks):
        selector.register(sock, selectors.EVENT_READ, index)
    start = time.monotonic()
    deadline = start + duration
    for sock in socks:
        sock.send(frame)
    total = 0
    while total < max_ops:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        for key, _ in selector.select(remaining):
            index = key.data
            data = buffers[index] + key.fileobj.recv(RECV_SIZE)  # type: ignore[union-attr]
            while (length := response_length(data)) is not None:
                data = data[length:]
                counts[index] += 1
                total += 1
                key.fileobj.send(frame)  # type: ignore[union-attr]
            buffers[index] = data
    elapsed = time.monotonic() - start
    selector.close()
    for sock in socks:
        sock.close()
    return counts, elapsed


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench._load")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--conns", type=int, required=True)
    parser.add_argument("--frame", required=True, help="request frame, hex")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--max-ops", type=int, default=50_000_000)
    args = parser.parse_args(argv)
    counts, elapsed = run_load(
        args.socket, args.conns, bytes.fromhex(args.frame), args.duration, args.max_ops
    )
    print(json.dumps({"counts": counts, "elapsed": elapsed}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
