"""Waiting I/O on non-blocking stdlib sockets under trio (daemon and trio client).

Plain ``socket.socket`` objects driven by ``trio.lowlevel.wait_readable/wait_writable``:
no stream wrapper, no conflict detector, and no scheduler round for an operation the
kernel can complete at once (see docs/perf.md).
"""

from __future__ import annotations

import socket

import trio

from hycan._netns import fds_from, rights


async def receive(sock: socket.socket, size: int) -> bytes:
    """Wait for and return the next bytes (b"" at EOF)."""
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            return sock.recv(size)
        except BlockingIOError:
            continue


async def receive_with_fds(sock: socket.socket, size: int) -> tuple[bytes, list[int]]:
    """Wait for the next bytes, and the descriptors (SCM_RIGHTS) that came with them."""
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            return recv_with_fds(sock, size)
        except BlockingIOError:
            continue


_ANCILLARY = socket.CMSG_SPACE(4)  # room for one descriptor: the kernel closes any more


def recv_with_fds(sock: socket.socket, size: int) -> tuple[bytes, list[int]]:
    """One ``recvmsg``: the bytes, and at most one descriptor passed with them."""
    data, ancillary, _flags, _ = sock.recvmsg(size, _ANCILLARY)
    return data, fds_from(ancillary) if ancillary else []


async def send_all(sock: socket.socket, data: bytes, fd: int | None = None) -> None:
    """Send everything (with ``fd`` passed along the first bytes, by SCM_RIGHTS), waiting
    only while the peer's receive buffer is full."""
    if fd is not None:
        while True:
            try:
                sent = sock.sendmsg([data], rights(fd))
                break
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
    else:
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
