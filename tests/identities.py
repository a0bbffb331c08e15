"""Throwaway users and groups, and running a function as one of them (root only).

Code runs as another user in a forked child (no exec), so the test's interpreter need not
be readable by that user; the result comes back pickled through a pipe.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class Identity:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


@dataclass(frozen=True)
class Identities:
    group: str  # the access group handed to the daemon
    gid: int
    member: Identity  # in the group
    member2: Identity  # another member, for "one member against another"
    outsider: Identity  # not in the group
    service: Identity  # a system user for `hycan-daemon --user`


def _id(*args: str) -> int:
    return int(subprocess.run(["id", *args], check=True, capture_output=True, text=True).stdout)


def _user(name: str, *extra: str) -> Identity:
    subprocess.run(
        ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", *extra, name], check=True
    )
    groups = subprocess.run(["id", "-G", name], check=True, capture_output=True, text=True)
    return Identity(
        name, _id("-u", name), _id("-g", name), tuple(int(g) for g in groups.stdout.split())
    )


@pytest.fixture
def identities() -> Iterator[Identities]:
    """A group, two members, an outsider and a system user; all removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create throwaway users (CI runs as root)")
    tag = uuid.uuid4().hex[:6]
    group = f"hyc-g-{tag}"
    users: list[str] = []
    subprocess.run(["groupadd", group], check=True)
    try:
        gid = int(
            subprocess.run(
                ["getent", "group", group], check=True, capture_output=True, text=True
            ).stdout.split(":")[2]
        )
        member = _user(f"hyc-m-{tag}", "-G", group)
        users.append(member.name)
        member2 = _user(f"hyc-n-{tag}", "-G", group)
        users.append(member2.name)
        outsider = _user(f"hyc-o-{tag}")
        users.append(outsider.name)
        service = _user(f"hyc-s-{tag}", "--system")
        users.append(service.name)
        yield Identities(group, gid, member, member2, outsider, service)
    finally:
        for name in users:
            subprocess.run(["userdel", name], check=False, capture_output=True)
        subprocess.run(["groupdel", group], check=False, capture_output=True)


def become(who: Identity) -> None:
    """Turn this process into ``who`` (groups, gid, uid; for a child before it runs)."""
    os.setgroups(list(who.groups))
    os.setresgid(who.gid, who.gid, who.gid)
    os.setresuid(who.uid, who.uid, who.uid)


def run_as(who: Identity, fn: Callable[[], Any]) -> Any:
    """Run ``fn()`` in a forked child as ``who``; return its result or re-raise its error."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        try:
            become(who)
            outcome: tuple[bool, Any] = (True, fn())
        except BaseException as exc:  # report everything, including assertion errors
            outcome = (False, exc)
        with os.fdopen(write_fd, "wb") as out:
            try:
                pickle.dump(outcome, out)
            except Exception as exc:  # an unpicklable error: send its text
                pickle.dump((False, RuntimeError(repr(exc))), out)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as inp:
        data = inp.read()
    os.waitpid(pid, 0)
    ok, value = pickle.loads(data)
    if not ok:
        raise value
    return value
