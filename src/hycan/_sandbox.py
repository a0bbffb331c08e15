"""A child process in a fresh user and network namespace, held before ``exec`` until the
links it needs are in place (``hycan run``).

The child maps only the caller's own uid and gid (``setgroups`` denied, as an unprivileged
process must), so the command runs as the calling user, with no capability once it execs;
its supplementary groups stay in its kernel credentials, so it can still reach the daemon's
socket. No privilege is needed: this is what ``unshare --user --net --map-current-user``
does, on Linux kernels that allow unprivileged user namespaces.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Mapping, Sequence

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
EXIT_NOT_FOUND, EXIT_NOT_EXECUTABLE, EXIT_SETUP = 127, 126, 125


class SandboxError(OSError):
    """The namespaces could not be made (unprivileged user namespaces off, a limit)."""


class Sandbox:
    """``cmd`` in a new user + network namespace; runs only once :meth:`release` is called.

    ``netns`` is the path of its network namespace (for the daemon). :meth:`wait` and
    :meth:`send_signal` behave like ``subprocess.Popen``'s.
    """

    def __init__(self, cmd: Sequence[str], env: Mapping[str, str]) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        uid, gid = os.getuid(), os.getgid()
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(ready_r)
            os.close(go_w)
            _child(libc, uid, gid, ready_w, go_r, list(cmd), dict(env))
        os.close(ready_w)
        os.close(go_r)
        self.pid = pid
        self._go: int | None = go_w
        self.returncode: int | None = None
        with os.fdopen(ready_r, "rb") as ready:
            answer = ready.read()
        if answer != b"ready":
            self.abandon()
            reason = answer.decode("utf-8", "replace") or "the child died"
            raise SandboxError(f"cannot make a user and network namespace: {reason}")
        self.netns = f"/proc/{pid}/ns/net"

    def release(self) -> None:
        """Let the command run (exec) now."""
        go, self._go = self._go, None
        if go is not None:
            os.write(go, b"go")
            os.close(go)

    def abandon(self) -> None:
        """End the child if it was never released (it reads EOF and exits unrun)."""
        go, self._go = self._go, None
        if go is not None:
            os.close(go)
            self.wait()

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the command (if it is still running)."""
        if self.returncode is None:
            os.kill(self.pid, signum)

    def wait(self) -> int:
        """Wait for the command; its exit status, or -N if signal N ended it."""
        if self.returncode is None:
            while True:
                try:
                    _, status = os.waitpid(self.pid, 0)
                    break
                except InterruptedError:  # pragma: no cover (PEP 475 retries)
                    continue
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as file:
        file.write(text)


def _child(
    libc: ctypes.CDLL,
    uid: int,
    gid: int,
    ready: int,
    go: int,
    cmd: list[str],
    env: dict[str, str],
) -> None:
    code = EXIT_SETUP
    try:
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error) + " (are unprivileged user namespaces off?)")
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
        os.write(ready, b"ready")
        os.close(ready)
        if os.read(go, 2) != b"go":
            os._exit(EXIT_SETUP)
        os.close(go)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        try:
            os.execvpe(cmd[0], cmd, env)
        except FileNotFoundError:
            code = EXIT_NOT_FOUND
            os.write(2, f"hycan run: {cmd[0]}: command not found\n".encode())
        except PermissionError:
            code = EXIT_NOT_EXECUTABLE
            os.write(2, f"hycan run: {cmd[0]}: permission denied\n".encode())
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.write(ready, str(exc).encode("utf-8", "replace")[:500])
    os._exit(code)
