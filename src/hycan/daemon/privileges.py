"""Drop the daemon's privileges to CAP_NET_ADMIN alone (python-prctl + /proc).

The end state :func:`drop_privileges` guarantees, checked in
``/proc/thread-self/status`` after every change:

* CapEff = CapPrm = CapBnd = CAP_NET_ADMIN exactly;
* CapInh and CapAmb hold nothing but CAP_NET_ADMIN. A privileged start drops
  them to 0; a start under systemd with ``AmbientCapabilities=CAP_NET_ADMIN``
  necessarily has CAP_NET_ADMIN in both, which is accepted because nothing
  beyond CAP_NET_ADMIN is reachable from there;
* NoNewPrivs = 1.

When the process had CAP_SETPCAP (started as root), the securebits
:data:`LOCKED_SECUREBITS` are set and locked as well, so neither a uid change
nor an execve can ever give capabilities back.
"""

from __future__ import annotations

import ctypes
import os
import pwd
from dataclasses import dataclass

import prctl

from hycan._caps import NET_ADMIN_MASK, CapState, cap_names, read_cap_state

__all__ = [
    "LOCKED_SECUREBITS",
    "PrivilegeError",
    "drop_privileges",
    "securebits",
    "securebits_locked",
]

# linux/prctl.h and linux/securebits.h
_PR_SET_SECUREBITS = 28
_SECBIT_NOROOT = 1 << 0
_SECBIT_NOROOT_LOCKED = 1 << 1
_SECBIT_NO_SETUID_FIXUP = 1 << 2
_SECBIT_NO_SETUID_FIXUP_LOCKED = 1 << 3
_SECBIT_KEEP_CAPS_LOCKED = 1 << 5
_SECBIT_NO_CAP_AMBIENT_RAISE = 1 << 6
_SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED = 1 << 7

#: Securebits set (and locked) by a privileged drop: uid 0 gets no implicit
#: capabilities on execve (NOROOT), uid changes never touch the capability sets
#: (NO_SETUID_FIXUP, which is what keeps CAP_NET_ADMIN across the switch to
#: ``user``, so PR_SET_KEEPCAPS is not needed), KEEP_CAPS is locked off and the
#: ambient set can never be raised again.
LOCKED_SECUREBITS = (
    _SECBIT_NOROOT
    | _SECBIT_NOROOT_LOCKED
    | _SECBIT_NO_SETUID_FIXUP
    | _SECBIT_NO_SETUID_FIXUP_LOCKED
    | _SECBIT_KEEP_CAPS_LOCKED
    | _SECBIT_NO_CAP_AMBIENT_RAISE
    | _SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED
)

_CAP_SETPCAP_MASK = 1 << prctl.CAP_SETPCAP
# Every capability but CAP_NET_ADMIN that python-prctl (i.e. the libcap it was built
# with) knows; any newer one the kernel has is left alone and reported by the check.
_OTHER_CAPS: list[int] = sorted(set(prctl.ALL_CAPS) - {prctl.CAP_NET_ADMIN})

_FIX_HINT = (
    "start hycan-daemon as root (it drops to CAP_NET_ADMIN itself) or under systemd with "
    "CapabilityBoundingSet=CAP_NET_ADMIN, AmbientCapabilities=CAP_NET_ADMIN and "
    "NoNewPrivileges=yes (see deploy/systemd/hycan-daemon.service)"
)


class PrivilegeError(Exception):
    """The process cannot be brought to the CAP_NET_ADMIN-only state."""


@dataclass(frozen=True)
class _Identity:
    name: str
    uid: int
    gid: int


def securebits() -> int:
    """Return the calling thread's securebits (PR_GET_SECUREBITS)."""
    return int(prctl.get_securebits())


def securebits_locked() -> bool:
    """Return True if every bit of :data:`LOCKED_SECUREBITS` is set."""
    return _all_locked(securebits())


def _all_locked(bits: int) -> bool:
    return bits & LOCKED_SECUREBITS == LOCKED_SECUREBITS


def _set_securebits(bits: int) -> None:
    # python-prctl rejects the NO_CAP_AMBIENT_RAISE bits, so call prctl(2) directly.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_SECUREBITS, ctypes.c_ulong(bits), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _lookup_user(user: str) -> _Identity:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(
            f"user {user!r} does not exist; create it (e.g. with deploy/sysusers.d/hycan.conf) "
            "or drop the user option"
        ) from None
    return _Identity(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _identity_matches(target: _Identity) -> bool:
    return (
        os.getresuid() == (target.uid,) * 3
        and os.getresgid() == (target.gid,) * 3
        and not os.getgroups()
    )


def _problems(state: CapState, target: _Identity | None) -> list[str]:
    """List every way ``state`` (and the process identity) misses the end state."""
    found = []
    for label, mask, exact in (
        ("CapEff", state.effective, True),
        ("CapPrm", state.permitted, True),
        ("CapBnd", state.bounding, True),
        ("CapInh", state.inheritable, False),
        ("CapAmb", state.ambient, False),
    ):
        extra = mask & ~NET_ADMIN_MASK
        if extra:
            found.append(f"{label} has extra {', '.join(cap_names(extra))}")
        if exact and not mask & NET_ADMIN_MASK:
            found.append(f"{label} lacks cap_net_admin")
    if not state.no_new_privs:
        found.append("NoNewPrivs is 0")
    if target is not None and not _identity_matches(target):
        found.append(
            f"not running as user {target.name} (uid {target.uid}, gid {target.gid}, "
            f"no supplementary groups): resuid={os.getresuid()} resgid={os.getresgid()} "
            f"groups={os.getgroups()}"
        )
    return found


def _describe_identity() -> str:
    uid, gid = os.getuid(), os.getgid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}, gid {gid}"
    return f"user {name} (uid {uid}, gid {gid})"


def _describe_securebits() -> str:
    bits = securebits()
    return f"securebits {bits:#04x} {'locked' if _all_locked(bits) else 'not locked'}"


def _thread_count() -> int:
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise ValueError("no Threads: line in /proc/self/status")


def drop_privileges(user: str | None = None) -> tuple[CapState, str]:
    """Reduce the process to CAP_NET_ADMIN (optionally as ``user``) and verify it.

    Capabilities are per thread and capset(2) changes only the calling thread:
    call this before any thread exists, i.e. before ``trio.run``.

    Returns the verified state of the calling thread and a one-line report.
    If the process already is in the end state (e.g. started by systemd as in
    deploy/systemd/hycan-daemon.service) and needs no user change, it only reads
    /proc and makes no capset/prctl-set/setuid call at all, since such a unit's
    SystemCallFilter may refuse those or kill the process for them.

    Raises PrivilegeError if ``user`` does not exist, or if the end state cannot
    be reached (e.g. started with extra capabilities but without CAP_SETPCAP);
    the message names the extra or missing capabilities.
    """
    target = None if user is None else _lookup_user(user)
    before = read_cap_state("thread-self")
    if not _problems(before, target):
        return before, (
            "already minimal (started under systemd restrictions?): verified, nothing changed; "
            f"{_describe_identity()}; {_describe_securebits()}"
        )

    threads = _thread_count()
    if threads > 1:
        raise PrivilegeError(
            f"drop_privileges() must run before any thread is started, but {threads} threads "
            "exist: capset(2) changes only the calling thread, the others would keep their "
            "capabilities"
        )
    try:
        step = "set securebits"
        if before.effective & _CAP_SETPCAP_MASK and securebits() != LOCKED_SECUREBITS:
            _set_securebits(LOCKED_SECUREBITS)
        step = "drop bounding set"
        for cap in _OTHER_CAPS:
            if before.bounding >> cap & 1:
                prctl.capbset_drop(cap)
        if target is not None and not _identity_matches(target):
            step = f"switch to user {target.name}"
            os.setgroups([])
            os.setresgid(target.gid, target.gid, target.gid)
            os.setresuid(target.uid, target.uid, target.uid)
        state = read_cap_state("thread-self")
        if (state.effective, state.permitted, state.inheritable) != (
            NET_ADMIN_MASK,
            NET_ADMIN_MASK,
            0,
        ):
            step = "capset to CAP_NET_ADMIN"
            effective_permitted = [prctl.CAP_EFFECTIVE, prctl.CAP_PERMITTED]
            prctl.set_caps(
                (prctl.CAP_NET_ADMIN, effective_permitted, True),
                (prctl.CAP_NET_ADMIN, prctl.CAP_INHERITABLE, False),
                (_OTHER_CAPS, [*effective_permitted, prctl.CAP_INHERITABLE], False),
            )
        if not state.no_new_privs:
            step = "set no_new_privs"
            prctl.set_no_new_privs(1)
    except PermissionError as exc:
        found = read_cap_state("thread-self")
        raise PrivilegeError(
            f"cannot drop privileges to CAP_NET_ADMIN: {step} failed ({exc.strerror}); "
            f"found {found.describe()}: {'; '.join(_problems(found, target))}; {_FIX_HINT}"
        ) from exc

    after = read_cap_state("thread-self")
    problems = _problems(after, target)
    if problems:
        raise PrivilegeError(
            "privileges dropped but the result is not CAP_NET_ADMIN only: "
            f"{'; '.join(problems)}; {after.describe()}; {_FIX_HINT}"
        )
    who = _describe_identity() + (", no supplementary groups" if target else "")
    return after, f"dropped to CAP_NET_ADMIN as {who}; {_describe_securebits()}"


def unlink_problem(path: str, user: str | None) -> str | None:
    """Why the daemon, once restricted, could not remove its socket at ``path``, or None.

    Asked by doing it: a forked child takes the credentials the daemon will have (``user``
    with no supplementary groups, or root without any capability) and hard-links the socket
    to a probe name, then unlinks the probe. That covers what a look at mode bits cannot:
    ACLs, parent directories, append-only directories, read-only mounts. The parent, still
    privileged, removes a probe the child could not.
    """
    probe = f"{path}.{os.getpid()}.probe"
    target = _lookup_user(user) if user else None
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child reports through the pipe)
        code = 0
        try:
            if target is not None:
                os.setgroups([])
                os.setresgid(target.gid, target.gid, target.gid)
                os.setresuid(target.uid, target.uid, target.uid)  # drops every capability
            else:
                prctl.cap_effective.limit()
            os.link(path, probe, follow_symlinks=False)
            os.unlink(probe)
        except OSError as exc:
            code = exc.errno or 1
        except BaseException:
            code = 1
        os.write(write_fd, code.to_bytes(4, "little"))
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as report:
        code = int.from_bytes(report.read(4) or b"\x01\x00\x00\x00", "little")
    os.waitpid(pid, 0)
    if os.path.lexists(probe):
        os.unlink(probe)
    if not code:
        return None
    who = f"user {target.name}" if target else "root without CAP_DAC_OVERRIDE"
    return f"as {who} it could not remove {path} when it exits ({os.strerror(code)})"
