"""Where the daemon's socket lives, and how clients find it."""

from __future__ import annotations

import os
from typing import NamedTuple

SYSTEM_SOCKET = "/var/run/hycan_daemon.sock"
"""The system service's socket (``/var/run`` is ``/run`` on Debian)."""
MANUAL_SOCKET = "/tmp/hycan_daemon.sock"
"""Default for a daemon started by hand."""
ENV_SOCKET = "HYCAN_DAEMON_SOCKET"


class SocketChoice(NamedTuple):
    """The path a client will use and whether somebody named it explicitly."""

    path: str
    explicit: bool
    tried: tuple[str, ...]


def client_socket(explicit: str | os.PathLike[str] | None = None) -> SocketChoice:
    """Pick the daemon socket: argument, else ``$HYCAN_DAEMON_SOCKET``, else the system
    socket if it exists, else the manual default."""
    if explicit is not None:
        path = os.fspath(explicit)
        return SocketChoice(path, True, (path,))
    env = os.environ.get(ENV_SOCKET)
    if env:
        return SocketChoice(env, True, (env,))
    if os.path.exists(SYSTEM_SOCKET):
        return SocketChoice(SYSTEM_SOCKET, False, (SYSTEM_SOCKET,))
    return SocketChoice(MANUAL_SOCKET, False, (SYSTEM_SOCKET, MANUAL_SOCKET))
