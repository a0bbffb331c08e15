"""The request frames, and the servers shared by parts 1, 2, 4 and 5."""

from __future__ import annotations

import os
from dataclasses import dataclass

from bench._client import RawClient
from bench._system import Service, python_module
from hycan._protocol import Op, encode_request

PING = encode_request(Op.PING, b"")
STATUS_LO = encode_request(Op.STATUS, b"lo")
UP_MISSING = encode_request(Op.INTERFACE_UP, b"missing0")


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
