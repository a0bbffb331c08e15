"""hycan._caps: parsing /proc/PID/status capability lines, names, has_cap_net_admin."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hycan._caps import (
    CAP_NAMES,
    CAP_NET_ADMIN,
    NET_ADMIN_MASK,
    CapState,
    cap_names,
    has_cap_net_admin,
    parse_cap_state,
    read_cap_state,
)

SRC = Path(__file__).resolve().parents[1] / "src"

# /proc/PID/status of a daemon started by deploy/systemd/hycan-daemon.service (abridged).
SYSTEMD_STATUS = """\
Name:\thycan-daemon
Umask:\t0077
State:\tS (sleeping)
Tgid:\t4711
Pid:\t4711
Uid:\t998\t998\t998\t998
Gid:\t998\t998\t998\t998
Groups:\t
CapInh:\t0000000000001000
CapPrm:\t0000000000001000
CapEff:\t0000000000001000
CapBnd:\t0000000000001000
CapAmb:\t0000000000001000
NoNewPrivs:\t1
Seccomp:\t2
Seccomp_filters:\t1
"""


def test_parse_systemd_status() -> None:
    assert parse_cap_state(SYSTEMD_STATUS) == CapState(
        effective=NET_ADMIN_MASK,
        permitted=NET_ADMIN_MASK,
        inheritable=NET_ADMIN_MASK,
        bounding=NET_ADMIN_MASK,
        ambient=NET_ADMIN_MASK,
        no_new_privs=True,
    )


def test_parse_root_status() -> None:
    text = SYSTEMD_STATUS.replace("CapEff:\t0000000000001000", "CapEff:\t000001ffffffffff")
    text = text.replace("CapInh:\t0000000000001000", "CapInh:\t0000000000000000")
    text = text.replace("NoNewPrivs:\t1", "NoNewPrivs:\t0")
    state = parse_cap_state(text)
    assert state.effective == (1 << 41) - 1
    assert state.inheritable == 0
    assert state.no_new_privs is False


@pytest.mark.parametrize("field", ["CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb", "NoNewPrivs"])
def test_parse_missing_field(field: str) -> None:
    text = "".join(line for line in SYSTEMD_STATUS.splitlines(True) if not line.startswith(field))
    with pytest.raises(ValueError, match=f"no {field}: line"):
        parse_cap_state(text)


def test_parse_malformed_mask() -> None:
    with pytest.raises(ValueError):
        parse_cap_state(SYSTEMD_STATUS.replace("CapBnd:\t0000000000001000", "CapBnd:\tzz"))


@given(
    masks=st.lists(st.integers(0, 2**64 - 1), min_size=5, max_size=5),
    no_new_privs=st.booleans(),
)
def test_parse_round_trip(masks: list[int], no_new_privs: bool) -> None:
    eff, prm, inh, bnd, amb = masks
    text = (
        f"Name:\tx\nCapInh:\t{inh:016x}\nCapPrm:\t{prm:016x}\nCapEff:\t{eff:016x}\n"
        f"CapBnd:\t{bnd:016x}\nCapAmb:\t{amb:016x}\nNoNewPrivs:\t{int(no_new_privs)}\n"
    )
    state = parse_cap_state(text)
    assert state == CapState(eff, prm, inh, bnd, amb, no_new_privs)
    assert state.describe().startswith(
        f"CapEff={eff:016x} CapPrm={prm:016x} CapInh={inh:016x} CapBnd={bnd:016x} "
        f"CapAmb={amb:016x} NoNewPrivs={int(no_new_privs)} "
    )


def test_describe() -> None:
    state = CapState(NET_ADMIN_MASK, NET_ADMIN_MASK, 0, NET_ADMIN_MASK, 0, True)
    assert state.describe() == (
        "CapEff=0000000000001000 CapPrm=0000000000001000 CapInh=0000000000000000 "
        "CapBnd=0000000000001000 CapAmb=0000000000000000 NoNewPrivs=1 "
        "(effective: cap_net_admin)"
    )
    assert CapState(0, 0, 0, 0, 0, False).describe().endswith("NoNewPrivs=0 (effective: none)")


def test_cap_names() -> None:
    assert CAP_NET_ADMIN == 12 and NET_ADMIN_MASK == 0x1000
    assert cap_names(0) == ()
    assert cap_names(NET_ADMIN_MASK) == ("cap_net_admin",)
    assert cap_names(0x203000) == ("cap_net_admin", "cap_net_raw", "cap_sys_admin")
    assert cap_names(1 << 40 | 1 << 43) == ("cap_checkpoint_restore", "cap_43")
    assert len(CAP_NAMES) == 41


@pytest.mark.skipif(
    shutil.which("capsh") is None, reason="capsh not installed (apt-get install libcap2-bin)"
)
def test_cap_names_match_libcap() -> None:
    out = subprocess.run(
        ["capsh", f"--decode={(1 << len(CAP_NAMES)) - 1:#x}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert tuple(out.strip().split("=", 1)[1].split(",")) == CAP_NAMES


def test_read_real_proc_status() -> None:
    text = Path("/proc/self/status").read_text()
    raw = dict(re.findall(r"^(Cap\w+|NoNewPrivs):\s*(\w+)$", text, re.MULTILINE))
    for pid in ("self", os.getpid()):
        state = read_cap_state(pid)
        assert f"{state.effective:016x}" == raw["CapEff"]
        assert f"{state.permitted:016x}" == raw["CapPrm"]
        assert f"{state.inheritable:016x}" == raw["CapInh"]
        assert f"{state.bounding:016x}" == raw["CapBnd"]
        assert f"{state.ambient:016x}" == raw["CapAmb"]
        assert state.no_new_privs == (raw["NoNewPrivs"] == "1")
    assert read_cap_state("thread-self") == read_cap_state("self")  # main thread
    last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    assert read_cap_state().bounding >> (last_cap + 1) == 0


def test_has_cap_net_admin_follows_effective_set() -> None:
    assert has_cap_net_admin() == bool(read_cap_state("thread-self").effective & NET_ADMIN_MASK)


@pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root to start children with chosen caps (CI runs as root)"
)
@pytest.mark.skipif(
    shutil.which("setpriv") is None, reason="setpriv not installed (apt-get install util-linux)"
)
@pytest.mark.parametrize(
    ("bounding", "expected"),
    [("-all,+net_admin", "True"), ("-net_admin", "False")],
)
def test_has_cap_net_admin_in_child(bounding: str, expected: str) -> None:
    # uid 0 executing a program gets exactly its bounding set as effective set.
    code = "from hycan._caps import has_cap_net_admin; print(has_cap_net_admin())"
    out = subprocess.run(
        ["setpriv", f"--bounding-set={bounding}", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    ).stdout
    assert out.strip() == expected
