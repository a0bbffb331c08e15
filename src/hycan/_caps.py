"""Read Linux capability state from ``/proc`` (stdlib only, no syscalls).

Used by the daemon to verify its own privileges and by the client library for
diagnostics, so it must not import python-prctl or anything else outside the
standard library.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CAP_NAMES",
    "CAP_NET_ADMIN",
    "NET_ADMIN_MASK",
    "CapState",
    "cap_names",
    "has_cap_net_admin",
    "parse_cap_state",
    "read_cap_state",
]

#: Capability number of CAP_NET_ADMIN (linux/capability.h).
CAP_NET_ADMIN = 12
#: CAP_NET_ADMIN as a bit mask, as it appears in ``CapEff:`` (``0000000000001000``).
NET_ADMIN_MASK = 1 << CAP_NET_ADMIN

#: Capability numbers 0..40 (Linux 5.9+) in order; index = capability number.
CAP_NAMES: tuple[str, ...] = (
    "cap_chown",
    "cap_dac_override",
    "cap_dac_read_search",
    "cap_fowner",
    "cap_fsetid",
    "cap_kill",
    "cap_setgid",
    "cap_setuid",
    "cap_setpcap",
    "cap_linux_immutable",
    "cap_net_bind_service",
    "cap_net_broadcast",
    "cap_net_admin",
    "cap_net_raw",
    "cap_ipc_lock",
    "cap_ipc_owner",
    "cap_sys_module",
    "cap_sys_rawio",
    "cap_sys_chroot",
    "cap_sys_ptrace",
    "cap_sys_pacct",
    "cap_sys_admin",
    "cap_sys_boot",
    "cap_sys_nice",
    "cap_sys_resource",
    "cap_sys_time",
    "cap_sys_tty_config",
    "cap_mknod",
    "cap_lease",
    "cap_audit_write",
    "cap_audit_control",
    "cap_setfcap",
    "cap_mac_override",
    "cap_mac_admin",
    "cap_syslog",
    "cap_wake_alarm",
    "cap_block_suspend",
    "cap_audit_read",
    "cap_perfmon",
    "cap_bpf",
    "cap_checkpoint_restore",
)

# /proc/PID/status field -> CapState attribute.
_MASK_FIELDS = {
    "CapEff": "effective",
    "CapPrm": "permitted",
    "CapInh": "inheritable",
    "CapBnd": "bounding",
    "CapAmb": "ambient",
}


def cap_names(mask: int) -> tuple[str, ...]:
    """Return the names of the capabilities set in ``mask`` (unknown bits as ``cap_N``)."""
    return tuple(
        CAP_NAMES[bit] if bit < len(CAP_NAMES) else f"cap_{bit}"
        for bit in range(mask.bit_length())
        if mask >> bit & 1
    )


@dataclass(frozen=True)
class CapState:
    """One thread's capability sets (as bit masks) and its no_new_privs flag."""

    effective: int
    permitted: int
    inheritable: int
    bounding: int
    ambient: int
    no_new_privs: bool

    def describe(self) -> str:
        """Return a one-line summary in ``/proc/PID/status`` notation plus effective names."""
        names = ",".join(cap_names(self.effective)) or "none"
        return (
            f"CapEff={self.effective:016x} CapPrm={self.permitted:016x} "
            f"CapInh={self.inheritable:016x} CapBnd={self.bounding:016x} "
            f"CapAmb={self.ambient:016x} NoNewPrivs={int(self.no_new_privs)} "
            f"(effective: {names})"
        )


def parse_cap_state(status_text: str) -> CapState:
    """Parse the capability lines of a ``/proc/PID/status`` text.

    Raises ValueError when a ``Cap*:`` or ``NoNewPrivs:`` line is missing or
    malformed (kernels older than 4.10 lack ``NoNewPrivs:``).
    """
    fields: dict[str, str] = {}
    for line in status_text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    values: dict[str, int] = {}
    try:
        for key, attr in _MASK_FIELDS.items():
            values[attr] = int(fields[key], 16)
        no_new_privs = int(fields["NoNewPrivs"])
    except KeyError as exc:
        raise ValueError(f"no {exc.args[0]}: line in /proc status text") from exc
    return CapState(no_new_privs=bool(no_new_privs), **values)


def read_cap_state(pid: int | str = "self") -> CapState:
    """Read the capability state of ``/proc/<pid>/status``.

    ``pid`` may be a number, ``"self"`` (the thread-group leader of the calling
    process) or ``"thread-self"`` (the calling thread; capabilities are per thread).
    """
    with open(f"/proc/{pid}/status", encoding="utf-8") as status:
        return parse_cap_state(status.read())


def has_cap_net_admin() -> bool:
    """Return True if the calling thread has CAP_NET_ADMIN in its effective set."""
    return bool(read_cap_state("thread-self").effective & NET_ADMIN_MASK)
