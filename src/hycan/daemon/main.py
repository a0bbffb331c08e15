"""``hycan-daemon``: command line, start-up order, signal handling.

Start-up order matters: bind the socket (or take it from systemd), open the backend, drop
privileges (before any thread exists: capabilities are per thread), and only then start
trio.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import trio

from hycan import __version__
from hycan._handler import Handler
from hycan._paths import MANUAL_SOCKET
from hycan.backends.base import Backend
from hycan.daemon import systemd
from hycan.daemon.listener import BoundSocket, StartupError, bind_unix
from hycan.daemon.server import Server

log = logging.getLogger("hycan.daemon")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``hycan-daemon`` arguments."""
    parser = argparse.ArgumentParser(
        prog="hycan-daemon",
        description="Serve vcan creation and link up/down to unprivileged local programs.",
    )
    parser.add_argument(
        "socket_path", nargs="?", help=f"socket to listen on (default {MANUAL_SOCKET})"
    )
    parser.add_argument("--socket", dest="socket_opt", metavar="PATH", help="same as SOCKET_PATH")
    parser.add_argument(
        "--backend",
        choices=("netlink", "memory"),
        default="netlink",
        help="netlink: the real kernel (default); memory: a simulated kernel for tests and demos",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log verbosity on stderr (default INFO: one audit line per request)",
    )
    parser.add_argument("--version", action="version", version=f"hycan-daemon {__version__}")
    args = parser.parse_args(argv)
    if args.socket_path and args.socket_opt and args.socket_path != args.socket_opt:
        parser.error("give the socket path once (positional or --socket)")
    args.socket = args.socket_opt or args.socket_path or MANUAL_SOCKET
    return args


def make_backend(kind: str) -> Backend:
    """Open the backend named on the command line."""
    if kind == "memory":
        from hycan.backends.memory import MemoryBackend

        return MemoryBackend()
    from hycan.backends.netlink import NetlinkBackend

    return NetlinkBackend()


def obtain_socket(path: str) -> BoundSocket:
    """The socket systemd passed us, or a freshly bound one at ``path``."""
    inherited = systemd.listen_fds()
    if inherited:
        if len(inherited) > 1:
            raise StartupError(f"systemd passed {len(inherited)} sockets; hycan-daemon takes one")
        sock = inherited[0]
        return BoundSocket(sock, str(sock.getsockname()), None)
    return bind_unix(path)


async def run(server: Server, bound: BoundSocket, backend_name: str) -> None:
    """Serve until SIGINT/SIGTERM, then stop cleanly."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, bound.sock)
            print(
                f"hycan-daemon {__version__}: serving on {bound.path} (backend {backend_name}, "
                f"pid {os.getpid()})",
                flush=True,
            )
            systemd.notify("READY=1")
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                systemd.notify("STOPPING=1")
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hycan-daemon``."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s hycan-daemon[%(process)d] %(levelname)s %(message)s",
    )
    try:
        bound = obtain_socket(args.socket)
    except (StartupError, systemd.ListenFdError) as exc:
        print(f"hycan-daemon: {exc}", file=sys.stderr)
        return 1
    try:
        backend = make_backend(args.backend)
        server = Server(Handler(backend, backend_name=args.backend))
        trio.run(run, server, bound, args.backend)
    finally:
        bound.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
