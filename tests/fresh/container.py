"""A throw-away Debian 12 root: debootstrap it, boot it under systemd-nspawn, run commands in it.

Commands run through the container's own systemd (``nsenter`` + ``systemd-run --pipe``): in
its cgroup, with its capability bounding set and a clean environment, as on a real machine.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SUITE = "bookworm"
# minbase + what a newcomer's Debian 12 has: systemd (booted as PID 1), python3, git (the
# checkout), sudo (README types it), ca-certificates. No python3-venv, pip or compiler.
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "git", "sudo", "ca-certificates")
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
PR_SET_PDEATHSIG = 1
EXIT_TIMEOUT = 124


@dataclass(frozen=True)
class Result:
    """Exit status (128+N for signal N), combined stdout+stderr, wall time."""

    status: int
    output: str
    seconds: float


def host_env(cache: Path) -> dict[str, str]:
    """A clean environment for host-side tools; temporary files stay in the cache."""
    tmp = cache / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {"PATH": SBIN_PATH, "LANG": "C.UTF-8", "TMPDIR": str(tmp), "HOME": "/root"}


def run_host(argv: list[str], *, env: dict[str, str], timeout: float, stdin: bytes = b"") -> Result:
    """Run argv on the host: its combined output (not shown) and status; 124 if it timed out."""
    start = time.monotonic()
    try:
        proc = subprocess.run(
            argv,
            input=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        output = (exc.output or b"").decode(errors="replace")
        return Result(EXIT_TIMEOUT, f"{output}\n(killed after {timeout:.0f} s)", timeout)
    output = proc.stdout.decode(errors="replace")
    return Result(exit_status(proc.returncode), output, time.monotonic() - start)


def exit_status(returncode: int) -> int:
    """subprocess's returncode (negative for a signal) as a shell would report it."""
    return 128 - returncode if returncode < 0 else returncode


def debian_mirror(sources: Path = Path("/etc/apt/sources.list.d/debian.sources")) -> str:
    """The first ``URIs:`` of the host's deb822 sources that serves the suite itself."""
    for stanza in sources.read_text().split("\n\n") if sources.exists() else []:
        fields = dict(
            line.split(":", 1) for line in stanza.splitlines() if ":" in line and line[:1] != "#"
        )
        if SUITE in fields.get("Suites", "").split() and "URIs" in fields:
            return fields["URIs"].split()[0]
    return "http://deb.debian.org/debian"


def debootstrap_argv(root: Path, mirror: str) -> list[str]:
    """The command that builds a minbase Debian 12 root with PACKAGES."""
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}"]
    return [*argv, SUITE, str(root), mirror]


def copy_host_cas(root: Path) -> list[str]:
    """Copy the host's local CA certificates in (update-ca-certificates runs inside)."""
    target = root / HOST_CA_DIR.relative_to("/")
    names = []
    for cert in sorted(HOST_CA_DIR.glob("*.crt")) if HOST_CA_DIR.is_dir() else []:
        shutil.copy2(cert, target / cert.name)
        names.append(cert.name)
    return names


def name_host(root: Path, hostname: str) -> None:
    """/etc/hostname and /etc/hosts as Debian's installer writes them (debootstrap copies the
    host's hostname and writes no hosts entry for it: sudo would warn "unable to resolve")."""
    (root / "etc/hostname").write_text(f"{hostname}\n")
    hosts = f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n\n::1\tlocalhost ip6-localhost\n"
    (root / "etc/hosts").write_text(hosts)


def mounts_below(root: Path) -> list[str]:
    """Mount points at or below root (e.g. left by an interrupted debootstrap), deepest first."""
    prefix = str(root.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # \040 for a space, ...
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def processes_in(root: Path) -> list[int]:
    """Pids whose root directory is root (a container still running on it)."""
    target, pids = str(root.resolve()), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "root") == target:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def remove_root(root: Path) -> None:
    """Delete root, never crossing into a mounted file system."""
    if not root.exists():
        return
    for point in mounts_below(root):
        subprocess.run(["umount", "--lazy", point], check=False)
    if mounts_below(root):
        raise RuntimeError(f"{root} still has mounts: {mounts_below(root)}")
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=True)


def _die_with_parent() -> None:
    """In the child: SIGTERM (nspawn's orderly poweroff) if the harness dies."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Machine:
    """One boot of root under systemd-nspawn (--register=no --keep-unit: no host systemd)."""

    def __init__(self, root: Path, name: str, console_log: Path) -> None:
        self.root, self.name, self.console_log = root, name, console_log
        self._nspawn: subprocess.Popen[bytes] | None = None
        self.init_pid = 0

    def argv(self, *, private_network: bool, extra: tuple[str, ...] = ()) -> list[str]:
        """The systemd-nspawn command line of a boot (``extra``: more nspawn options)."""
        argv = ["systemd-nspawn", "-D", str(self.root), "-b", "--register=no", "--keep-unit"]
        argv += [f"--machine={self.name}", "--console=read-only", *extra]
        return [*argv, "--private-network"] if private_network else argv

    def boot(self, *, private_network: bool, timeout: float, extra: tuple[str, ...] = ()) -> Result:
        """Start the container and wait until its systemd has booted (running or degraded)."""
        start = time.monotonic()
        with self.console_log.open("ab") as log:
            self._nspawn = subprocess.Popen(
                self.argv(private_network=private_network, extra=extra),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": SBIN_PATH, "LANG": "C.UTF-8"},
                start_new_session=True,  # Ctrl-C reaches the harness, which powers off
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (the harness has one thread)
            )
        deadline = start + timeout
        self.init_pid = self._wait_for_init(deadline)
        state = ""
        while time.monotonic() < deadline:
            # Fails ("Failed to connect to bus") until systemd listens; then waits for the boot.
            left = max(deadline - time.monotonic(), 1)
            state = self.run(["systemctl", "is-system-running", "--wait"], timeout=left).output
            if state.strip() in ("running", "degraded"):
                return Result(0, state, time.monotonic() - start)
            time.sleep(0.2)
        return Result(1, state, time.monotonic() - start)

    def _wait_for_init(self, deadline: float) -> int:
        """The container's PID 1 (nspawn's child, once it has exec'd systemd)."""
        assert self._nspawn is not None
        children = Path(f"/proc/{self._nspawn.pid}/task/{self._nspawn.pid}/children")
        while time.monotonic() < deadline:
            if self._nspawn.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited {self._nspawn.returncode}")
            for pid in children.read_text().split():
                try:
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        return int(pid)
                except FileNotFoundError:  # an nspawn helper that already exited
                    continue
            time.sleep(0.05)
        raise TimeoutError("the container's systemd did not start")

    def private_network(self) -> bool:
        """True if the container's network namespace is not the harness's (the host's)."""
        return os.readlink(f"/proc/{self.init_pid}/ns/net") != os.readlink("/proc/self/ns/net")

    def run(self, argv: list[str], *, stdin: bytes = b"", timeout: float = 60) -> Result:
        """Run argv as a transient service of the container's systemd; stdio are ours."""
        systemd_run = ["systemd-run", "--quiet", "--wait", "--pipe", "--collect", "--"]
        enter = ["nsenter", "-t", str(self.init_pid), "-a", *systemd_run, *argv]
        return run_host(
            enter, env={"PATH": SBIN_PATH, "LANG": "C.UTF-8"}, timeout=timeout, stdin=stdin
        )

    def poweroff(self, timeout: float = 60) -> Result:
        """Orderly shutdown (SIGTERM to nspawn); SIGKILL to the container's PID 1 if it hangs."""
        start = time.monotonic()
        if self._nspawn is None or self._nspawn.poll() is not None:
            return Result(0, "not running", 0.0)
        self._nspawn.terminate()
        try:
            status = self._nspawn.wait(timeout)
        except subprocess.TimeoutExpired:
            if self.init_pid:
                os.kill(self.init_pid, signal.SIGKILL)  # ends the container's pid namespace
            self._nspawn.kill()
            status = self._nspawn.wait()
        return Result(exit_status(status), "", time.monotonic() - start)
