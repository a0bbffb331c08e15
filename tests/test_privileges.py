"""hycan.daemon.privileges: real drops, each in a child process (root only).

A child runs :func:`_child` (this module is importable there: ``tests`` is on its
PYTHONPATH), prints one line with the result of ``drop_privileges()`` and then
answers commands read from stdin, so the test can inspect ``/proc/PID/status`` of
a live child. No sleeps: every step waits on a pipe.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hycan._caps import read_cap_state

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
NET_ADMIN_ONLY = "0000000000001000"
NO_CAPS = "0000000000000000"

needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="real capability drops need root (CAP_SETPCAP, CAP_SETUID); CI runs as root",
)
needs_setpriv = pytest.mark.skipif(
    shutil.which("setpriv") is None,
    reason="setpriv is not installed (apt-get install util-linux): it starts the children",
)
needs_x86_64 = pytest.mark.skipif(
    platform.machine() != "x86_64", reason="the seccomp filter uses x86_64 syscall numbers"
)

# setpriv prefixes for a child that starts with exactly CAP_NET_ADMIN (as root).
SETPRIV_EXACT = (
    "setpriv",
    "--bounding-set=-all,+net_admin",
    "--inh-caps=-all",
    "--no-new-privs",
)
# Like deploy/systemd/hycan-daemon.service (AmbientCapabilities=CAP_NET_ADMIN, ...),
# but as uid 0 with SECBIT_NOROOT so only the ambient set survives the execve.
SETPRIV_SYSTEMD_LIKE = (
    "setpriv",
    "--bounding-set=-all,+net_admin",
    "--inh-caps=-all,+net_admin",
    "--ambient-caps=-all,+net_admin",
    "--securebits=+noroot,+noroot_locked",
    "--no-new-privs",
)

# --- seccomp filter (child side) -----------------------------------------------------------

_AUDIT_ARCH_X86_64 = 0xC000003E
# Every x86_64 syscall that changes credentials or capabilities ...
_X86_64_CRED_SYSCALLS = (105, 106, 113, 114, 116, 117, 119, 122, 123, 126)  # set*id, capset
_X86_64_PRCTL = 157
# ... and every prctl option that does: PR_SET_KEEPCAPS, PR_CAPBSET_DROP,
# PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT.
_PRCTL_SETTERS = (8, 24, 28, 38, 47)
_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_RET_K = 0x06
_SECCOMP_RET_KILL_PROCESS = 0x80000000
_SECCOMP_RET_ALLOW = 0x7FFF0000
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


def _kill_filter() -> list[tuple[int, int, int, int]]:
    """BPF that kills the process on any credential/capability change, allows the rest."""
    # (code, jt, jf, k); jt/jf may be the labels "kill"/"allow", resolved below.
    prog: list[tuple[int, int | str, int | str, int]] = [
        (_BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (_BPF_JEQ_K, 0, "kill", _AUDIT_ARCH_X86_64),
        (_BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
        *((_BPF_JEQ_K, "kill", 0, nr) for nr in _X86_64_CRED_SYSCALLS),
        (_BPF_JEQ_K, 0, "allow", _X86_64_PRCTL),
        (_BPF_LD_W_ABS, 0, 0, 16),  # low half of seccomp_data.args[0]: the prctl option
        *((_BPF_JEQ_K, "kill", 0, option) for option in _PRCTL_SETTERS),
    ]
    labels = {"allow": len(prog), "kill": len(prog) + 1}
    prog += [(_BPF_RET_K, 0, 0, _SECCOMP_RET_ALLOW), (_BPF_RET_K, 0, 0, _SECCOMP_RET_KILL_PROCESS)]

    def jump(index: int, target: int | str) -> int:
        return labels[target] - index - 1 if isinstance(target, str) else target

    return [(code, jump(i, jt), jump(i, jf), k) for i, (code, jt, jf, k) in enumerate(prog)]


def _install_kill_filter() -> None:
    insns = _kill_filter()
    array = (_SockFilter * len(insns))(*(_SockFilter(*insn) for insn in insns))
    fprog = _SockFprog(len(insns), ctypes.cast(array, ctypes.POINTER(_SockFilter)))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def _child(user: str, *setup: str) -> None:
    """Child process body: optional ``setup`` steps, drop, report, then serve stdin commands."""
    if "groups" in setup:
        os.setgroups([4444, 4445])  # drop_privileges(user=...) must clear these
    if "thread" in setup:
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    if "seccomp" in setup:
        _install_kill_filter()  # before hycan.daemon.privileges is even imported
    import prctl

    from hycan.daemon.privileges import PrivilegeError, drop_privileges

    try:
        _, report = drop_privileges(user or None)
    except PrivilegeError as exc:
        print(f"PrivilegeError: {exc}", flush=True)
    else:
        print(f"OK {report}", flush=True)
    for line in sys.stdin:
        if line.strip() == "exec":  # what does a program executed by the daemon get?
            grep = ["grep", "-E", "^Cap(Prm|Eff)", "/proc/self/status"]
            out = subprocess.run(grep, capture_output=True, text=True, check=True).stdout
            print(" ".join(out.split()), flush=True)
        elif line.strip() == "capset":  # a no-op capset(2): SIGSYS under the kill filter
            prctl.cap_effective.net_admin = True
            print("capset survived", flush=True)


# --- test side ----------------------------------------------------------------------------


@contextlib.contextmanager
def run_child(
    *setup: str, user: str = "", prefix: tuple[str, ...] = ()
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start a :func:`_child` (under ``prefix``), yield it with its first output line; reap it."""
    code = f"import test_privileges as t; t._child({user!r}, *{setup!r})"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)])}
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        yield proc, proc.stdout.readline()
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def ask(proc: subprocess.Popen[str], command: str) -> str:
    """Send one command line to a child and return its one-line answer."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(command + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


def proc_status(pid: int) -> dict[str, str]:
    """``/proc/PID/status`` as a dict of stripped values."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def assert_net_admin_only(status: dict[str, str], *, inheritable: str = NO_CAPS) -> None:
    """The end state: CapEff = CapPrm = CapBnd = CAP_NET_ADMIN, nothing else, NoNewPrivs."""
    assert status["CapEff"] == NET_ADMIN_ONLY
    assert status["CapPrm"] == NET_ADMIN_ONLY
    assert status["CapBnd"] == NET_ADMIN_ONLY
    assert status["CapInh"] == inheritable
    assert status["CapAmb"] == inheritable
    assert status["NoNewPrivs"] == "1"


@pytest.fixture
def throwaway_user() -> Iterator[pwd.struct_passwd]:
    """A fresh system user (and its group), deleted again whatever happens."""
    if shutil.which("useradd") is None:
        pytest.skip("useradd is not installed (apt-get install passwd; CI has it)")
    name = f"hycan-test-{secrets.token_hex(4)}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=True, capture_output=True)


def test_unknown_user_is_a_privilege_error_and_changes_nothing() -> None:
    from hycan.daemon.privileges import PrivilegeError, drop_privileges

    before = read_cap_state("thread-self")
    name = f"hycan-no-such-user-{secrets.token_hex(4)}"
    with pytest.raises(PrivilegeError, match=f"user '{name}' does not exist"):
        drop_privileges(name)
    assert read_cap_state("thread-self") == before


@needs_root
def test_drop_as_root_leaves_only_net_admin() -> None:
    with run_child() as (proc, first):
        assert first.startswith("OK dropped to CAP_NET_ADMIN as user root (uid 0, gid 0)"), first
        assert first.rstrip().endswith("securebits 0xef locked"), first
        status = proc_status(proc.pid)
        assert_net_admin_only(status)
        assert status["Uid"].split() == ["0"] * 4
        # SECBIT_NOROOT (locked): uid 0 gains nothing by executing a program.
        assert ask(proc, "exec") == f"CapPrm: {NO_CAPS} CapEff: {NO_CAPS}"


@needs_root
def test_drop_to_user_switches_ids_clears_groups_keeps_net_admin(
    throwaway_user: pwd.struct_passwd,
) -> None:
    uid, gid = throwaway_user.pw_uid, throwaway_user.pw_gid
    assert uid != 0 and gid != 0
    with run_child("groups", user=throwaway_user.pw_name) as (proc, first):
        assert first.startswith(
            f"OK dropped to CAP_NET_ADMIN as user {throwaway_user.pw_name} "
            f"(uid {uid}, gid {gid}), no supplementary groups"
        ), first
        assert first.rstrip().endswith("securebits 0xef locked"), first
        status = proc_status(proc.pid)
        assert_net_admin_only(status)
        assert status["Uid"].split() == [str(uid)] * 4  # real, effective, saved, fs
        assert status["Gid"].split() == [str(gid)] * 4
        assert status["Groups"] == ""  # 4444 and 4445 are gone
        assert ask(proc, "exec") == f"CapPrm: {NO_CAPS} CapEff: {NO_CAPS}"


@needs_root
@needs_setpriv
@needs_x86_64
@pytest.mark.parametrize(
    ("prefix", "inheritable"),
    [(SETPRIV_EXACT, NO_CAPS), (SETPRIV_SYSTEMD_LIKE, NET_ADMIN_ONLY)],
    ids=["exact-end-state", "systemd-ambient"],
)
def test_already_minimal_makes_no_privileged_syscall(
    prefix: tuple[str, ...], inheritable: str
) -> None:
    """Under a seccomp filter that kills on capset/set*id/prctl-setters, it just verifies."""
    with run_child("seccomp", prefix=prefix) as (proc, first):
        assert first.startswith(
            "OK already minimal (started under systemd restrictions?): verified, nothing changed"
        ), first
        assert "CapEff=" not in first  # the daemon appends the state once, not the report too
        status = proc_status(proc.pid)
        assert status["Seccomp"] == "2"  # the filter is in force
        assert_net_admin_only(status, inheritable=inheritable)
        # The filter is live: the first capset(2) kills the very same process.
        assert ask(proc, "capset") == ""
        assert proc.wait(timeout=30) == -signal.SIGSYS


@needs_root
@needs_x86_64
def test_kill_filter_catches_a_real_drop() -> None:
    """Control: a full-root child that has to drop dies under the same filter."""
    with run_child("seccomp") as (proc, first):
        assert first == ""
        assert proc.wait(timeout=30) == -signal.SIGSYS


@needs_root
@needs_setpriv
def test_extra_caps_without_setpcap_raise_privilege_error() -> None:
    prefix = ("setpriv", "--bounding-set=-all,+net_admin,+net_raw,+sys_admin", "--inh-caps=-all")
    with run_child(prefix=prefix) as (proc, first):
        assert first.startswith(
            "PrivilegeError: cannot drop privileges to CAP_NET_ADMIN: "
            "drop bounding set failed (Operation not permitted)"
        ), first
        assert "CapBnd has extra cap_net_raw, cap_sys_admin" in first
        assert "CapPrm has extra cap_net_raw, cap_sys_admin" in first
        assert "NoNewPrivs is 0" in first
        assert "CapabilityBoundingSet=CAP_NET_ADMIN" in first  # how to fix it
        assert proc.poll() is None  # reported, not crashed
        assert proc_status(proc.pid)["CapBnd"] == "0000000000203000"  # nothing was changed


@needs_root
def test_refuses_to_drop_with_threads_running() -> None:
    with run_child("thread") as (proc, first):
        assert first.startswith(
            "PrivilegeError: drop_privileges() must run before any thread is started, "
            "but 2 threads exist"
        ), first
        assert proc_status(proc.pid)["CapEff"] == proc_status(os.getpid())["CapEff"]
