"""Driving a :class:`~hycan._handler.Handler` directly, as the daemon does (no sockets)."""

from __future__ import annotations

from hycan._handler import Answer, Handler, Session
from hycan._peercred import PeerCredentials
from hycan._protocol import Op, Request
from hycan.daemon.policy import Policy, Rules

ALICE = PeerCredentials(100, 1001, 1001, ())
BOB = PeerCredentials(200, 1002, 1002, ())
ROOT = PeerCredentials(300, 0, 0, ())


def iface_policy(*globs: str) -> Policy:
    """The policy of ``hycan-daemon --allow-iface GLOB...``."""
    return Policy(Rules.defaults(globs))


def answer(
    handler: Handler, op: Op, name: str, payload: bytes = b"", session: Session | None = None
) -> Answer:
    """One request, for ``session`` (default: a fresh one of ALICE)."""
    return handler.answer(Request(op, name.encode(), payload), session or Session(ALICE))


def handle(
    handler: Handler, op: Op, name: str, payload: bytes = b"", session: Session | None = None
) -> tuple[bool, int, str]:
    """(success, code, message) of one request."""
    response = answer(handler, op, name, payload, session).response
    return response.success, response.code, response.message
