"""Diagnostic server for part 3: hycan's own request path without trio.

The daemon's own answer path (``Server._answer``: the :class:`~hycan._handler.Handler`
with the netlink backend, the interface policy and its kind cache, and the audit lines)
served by one blocking thread per connection, like the stdlib echo floor. Compared with
the daemon it shows what trio's event loop costs on the request path; compared with the
C reference, what CPython's per-request work costs. A measurement aid only: no privilege
dropping, no limits, no peer policy.

Run as ``python -m bench._threaded --socket PATH --allow-iface GLOB`` (inside the
netns); prints one "serving on" line when ready, exits on SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
import threading

from bench._system import listen_unix
from hycan._handler import Handler, Session
from hycan._peercred import peer_credentials
from hycan._protocol import BadRequest, Request, RequestDecoder
from hycan.backends.netlink import NetlinkBackend
from hycan.daemon.audit import audit_logger
from hycan.daemon.policy import Policy, Rules
from hycan.daemon.server import Server


def _serve(conn: socket.socket, server: Server, lock: threading.Lock) -> None:
    session = Session(peer_credentials(conn))
    decoder = RequestDecoder()
    with conn, contextlib.suppress(OSError):
        while data := conn.recv(65536):
            decoder.receive_data(data)
            replies = []
            with lock:  # one netlink socket and one audit buffer for all threads
                while isinstance(event := decoder.next_event(), Request | BadRequest):
                    replies.append(server._answer(event, session))
            conn.sendall(b"".join(replies))
            with lock:
                server.audit.flush()


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench._threaded")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--allow-iface", action="append", default=[])
    args = parser.parse_args(argv)
    audit_logger.setLevel(logging.INFO)  # as the daemon's default --log-level
    policy = Policy(Rules.defaults(args.allow_iface))
    server = Server(Handler(NetlinkBackend(), policy=policy))
    lock = threading.Lock()
    listener = listen_unix(args.socket, 128)
    print(f"threaded hycan path: serving on {args.socket} (pid {os.getpid()})", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve, args=(conn, server, lock), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
