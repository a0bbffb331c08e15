"""Waiting I/O on non-blocking stdlib sockets under trio (daemon and trio client).

Plain ``socket.socket`` objects driven by ``trio.lowlevel.wait_readable/wait_writable``:
no stream wrapper, no conflict detector, and no scheduler round for an operation the
kernel can complete at once (see docs/perf.md).
"""

from __future__ import annotations

import socket

import trio


async def receive(sock: socket.socket, size: int) -> bytes:
    """Wait for and return the next bytes (b"" at EOF)."""
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            return sock.recv(size)
        except BlockingIOError:
            continue


async def send_all(sock: socket.socket, data: bytes) -> None:
    """Send everything, waiting only while the peer's receive buffer is full."""
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    if sent == len(data):
        return
    view = memoryview(data)[sent:]
    while view:
        await trio.lowlevel.wait_writable(sock)
        try:
            sent = sock.send(view)
        except BlockingIOError:
            continue
        view = view[sent:]
