"""Baseline servers: answer every request frame with a canned reply of the daemon's size.

``threaded`` is the floor the goals are measured against: a minimal stdlib server with one
thread per connection (blocking ``recv``/``sendall``). ``trio`` is the same logic on trio's
``SocketStream``: a reference that shows what the event loop alone costs. Both parse
request frames (``[op][name_len][name]``) so that pipelined or split frames are answered
exactly once, like the daemon, and answer op ``N`` with the bytes given by ``--reply N=HEX``.

Run as ``python -m bench._echo --kind threaded --socket PATH --reply 6=0100...``; it
prints one "serving on" line when ready and exits on SIGTERM or after ``--lifetime`` s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading

from bench._system import listen_unix

UNKNOWN_OP_REPLY = bytes.fromhex("00060000")  # failure, code 6, empty message
RECV_SIZE = 65536


def answers(buf: bytearray, replies: dict[int, bytes]) -> bytes:
    """Cut every complete name-only frame from ``buf``; return the joined replies."""
    out = []
    pos = 0
    while len(buf) - pos >= 2 and len(buf) - pos >= 2 + buf[pos + 1]:
        out.append(replies.get(buf[pos], UNKNOWN_OP_REPLY))
        pos += 2 + buf[pos + 1]
    del buf[:pos]
    return b"".join(out)


def _serve_connection(conn: socket.socket, replies: dict[int, bytes]) -> None:
    buf = bytearray()
    with conn, contextlib.suppress(OSError):
        while True:
            data = conn.recv(RECV_SIZE)
            if not data:
                return
            buf += data
            out = answers(buf, replies)
            if out:
                conn.sendall(out)


def serve_threaded(sock: socket.socket, replies: dict[int, bytes]) -> None:
    """Accept forever (until SIGTERM/SIGALRM); one daemon thread per connection."""
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=_serve_connection, args=(conn, replies), daemon=True).start()


def serve_trio(sock: socket.socket, replies: dict[int, bytes]) -> None:
    """The same server on trio streams (one task per connection)."""
    import trio

    async def handle(stream: trio.SocketStream) -> None:
        buf = bytearray()
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while True:
                    data = await stream.receive_some(RECV_SIZE)
                    if not data:
                        return
                    buf += data
                    out = answers(buf, replies)
                    if out:
                        await stream.send_all(out)

    async def main() -> None:
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        await trio.serve_listeners(handle, [listener])

    trio.run(main)


def _reply(text: str) -> tuple[int, bytes]:
    op, _, hex_bytes = text.partition("=")
    return int(op), bytes.fromhex(hex_bytes)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench._echo")
    parser.add_argument("--kind", choices=("threaded", "trio"), default="threaded")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--reply", action="append", type=_reply, default=[], metavar="OP=HEX")
    parser.add_argument("--lifetime", type=int, default=3600, help="exit after this many s")
    args = parser.parse_args(argv)
    signal.alarm(args.lifetime)  # never outlive a benchmark that forgot us
    sock = listen_unix(args.socket, 512)
    print(f"{args.kind} echo: serving on {args.socket} (pid {os.getpid()})", flush=True)
    replies = dict(args.reply)
    if args.kind == "trio":
        serve_trio(sock, replies)
    else:
        serve_threaded(sock, replies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
