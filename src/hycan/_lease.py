"""``hycan lease``: vcans that exist exactly as long as a command runs.

The vcans are leased on one connection to the daemon, which this process holds open while
the command runs: when the command exits they are deleted, and if this process dies in
any way (SIGKILL included) the daemon sees the connection close and deletes them itself.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Protocol, TextIO

from hycan._names import new_vcan_name
from hycan._sandbox import Sandbox, SandboxError
from hycan._sync.client import DaemonClient
from hycan.errors import DaemonUnavailable, HycanError, InterfaceNotFound, Timeout

CAN_MTU = 16
EXIT_FAILED, EXIT_UNAVAILABLE, EXIT_NOT_FOUND, EXIT_NOT_EXECUTABLE = 1, 3, 127, 126
# Sent to hycan alone: passed on to the command. SIGINT and SIGQUIT from a terminal reach
# the whole foreground process group, the command included, so hycan only ignores them.
_FORWARDED = (signal.SIGTERM, signal.SIGHUP)
_IGNORED = (signal.SIGINT, signal.SIGQUIT)


def lease_and_run(
    client: DaemonClient,
    names: Sequence[str],
    cmd: Sequence[str],
    *,
    classic: bool,
    stderr: TextIO,
) -> int:
    """Create ``names`` (leased, up; MTU 16 if ``classic``; one random name if none), run
    ``cmd`` with ``$HYCAN_VCANS`` (space-separated), ``$HYCAN_VCAN`` (the first) and
    ``$HYCAN_DAEMON_SOCKET`` (the daemon's socket) set,
    delete them, and return ``cmd``'s exit status (128 + N if signal N ended it)."""
    vcans = list(names) or [new_vcan_name()]
    try:
        with client:
            for name in vcans:
                client.create_vcan(name, lease=True)
                if classic:
                    client.set_mtu(name, CAN_MTU)
                client.up(name)
            status = _run(cmd, vcans, client.socket_path, stderr)
            for name in vcans:
                with contextlib.suppress(InterfaceNotFound):  # the command deleted it
                    client.delete(name)
    except HycanError as exc:
        print(f"hycan lease: {exc.message}", file=stderr)
        unavailable = isinstance(exc, DaemonUnavailable | Timeout)
        return EXIT_UNAVAILABLE if unavailable else EXIT_FAILED
    return status


def run_in_sandbox(
    client: DaemonClient,
    vcans: Sequence[str],
    vxcans: Sequence[tuple[str, str]],
    cmd: Sequence[str],
    *,
    stderr: TextIO,
) -> int:
    """``hycan run``: run ``cmd`` in a fresh user + network namespace holding the vcans
    ``vcans`` and the vxcan ends of ``vxcans`` ((name, host link) pairs: the peer on the
    host is routed both ways to the host link), all made by the daemon, up, and leased for
    the command's life; return its exit status (128 + N if signal N ended it)."""
    names = list(vcans) + [name for name, _ in vxcans]
    if not names:
        names = [new_vcan_name()]
        vcans = names
    env = _environment(names, client.socket_path)
    try:
        sandbox = Sandbox(cmd, env)
    except SandboxError as exc:
        print(f"hycan run: {exc.strerror or exc}", file=stderr)
        return EXIT_FAILED
    try:
        with client:
            for name in vcans:
                client.create_vcan(name, lease=True, netns=sandbox.netns, up=True)
            for name, host_link in vxcans:
                peer = "hyx" + secrets.token_hex(4)
                client.create_vxcan(name, peer=peer, netns=sandbox.netns, lease=True)
                client.add_route(peer, host_link, both=True, lease=True)
            sandbox.release()
            return _supervise(sandbox)
    except HycanError as exc:
        print(f"hycan run: {exc.message}", file=stderr)
        unavailable = isinstance(exc, DaemonUnavailable | Timeout)
        return EXIT_UNAVAILABLE if unavailable else EXIT_FAILED
    finally:
        sandbox.abandon()  # a child never released (an error above) exits unrun


def _environment(names: list[str], socket_path: str) -> dict[str, str]:
    env = dict(os.environ, HYCAN_VCANS=" ".join(names), HYCAN_VCAN=names[0])
    if socket_path != "in-process":  # the command's own hycan calls reach the same daemon
        env["HYCAN_DAEMON_SOCKET"] = socket_path
    return env


class _Child(Protocol):
    def send_signal(self, signum: int) -> None: ...

    def wait(self) -> int: ...


def _run(cmd: Sequence[str], vcans: list[str], socket_path: str, stderr: TextIO) -> int:
    env: Mapping[str, str] = _environment(vcans, socket_path)
    try:
        child = subprocess.Popen(list(cmd), env=env)
    except FileNotFoundError:
        print(f"hycan lease: {cmd[0]}: command not found", file=stderr)
        return EXIT_NOT_FOUND
    except PermissionError:
        print(f"hycan lease: {cmd[0]}: permission denied", file=stderr)
        return EXIT_NOT_EXECUTABLE
    return _supervise(child)


def _supervise(child: _Child) -> int:
    """Wait for ``child``, passing SIGTERM and SIGHUP on to it."""

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signum)  # the command decides; we wait for it, then clean up

    previous = {}
    if threading.current_thread() is threading.main_thread():  # (signals: main thread only)
        previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
        previous.update({sig: signal.signal(sig, signal.SIG_IGN) for sig in _IGNORED})
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code
