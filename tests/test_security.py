"""Least privilege on a real kernel (root, throwaway netns + users): who may ask, what may be
done, what the daemon keeps, and a client that refuses an impostor."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import hycan
from hycan import DaemonClient
from hycan._protocol import ok
from hycan.errors import ErrorCode
from tests.conftest import DaemonProcess, Netns, group_daemon
from tests.identities import Identities, run_as

pytestmark = pytest.mark.netns

NET_ADMIN_ONLY = "0000000000001000"
NOTHING = "0000000000000000"


def start_daemon(netns: Netns, shared_dir: Path, ids: Identities, *extra: str) -> DaemonProcess:
    return group_daemon(netns, shared_dir, ids.group, "--allow-iface", "veth0", *extra)


@pytest.fixture
def secured(netns: Netns, shared_dir: Path, identities: Identities) -> Iterator[DaemonProcess]:
    proc = start_daemon(netns, shared_dir, identities)
    yield proc
    proc.stop()


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def test_socket_is_root_group_0660(secured: DaemonProcess, identities: Identities) -> None:
    st = os.stat(secured.path)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert (st.st_uid, st.st_gid) == (0, identities.gid)


def test_member_toggles_allow_listed_veth(
    netns: Netns, secured: DaemonProcess, identities: Identities
) -> None:
    def as_member() -> list[bool]:
        with DaemonClient(secured.path) as client:
            client.up("veth0")
            after_up = client.status("veth0").up
            client.down("veth0")
            return [bool(after_up), bool(client.status("veth0").up)]

    assert run_as(identities.member, as_member) == [True, False]
    assert not netns.link_is_up("veth0")
    _, log = secured.stop()
    assert f"uid={identities.member.uid}" in log and "op=INTERFACE_UP name=veth0 result=ok" in log


def test_outsider_is_refused_and_nothing_changes(
    netns: Netns, secured: DaemonProcess, identities: Identities
) -> None:
    # The socket is 0660 root:group, so the kernel already refuses the connect...
    def connect_directly() -> str:
        with DaemonClient(secured.path) as client:
            client.up("veth0")
        return "served"

    with pytest.raises(hycan.PermissionDenied, match=f"not in group {identities.group}"):
        run_as(identities.outsider, connect_directly)
    # ...and with the file opened up, the daemon's own peer check refuses with code 10.
    os.chmod(secured.path, 0o666)
    with pytest.raises(hycan.PermissionDenied) as info:
        run_as(identities.outsider, connect_directly)
    assert info.value.code == ErrorCode.PERMISSION_DENIED
    assert f"uid {identities.outsider.uid} may not use hycan-daemon" in info.value.message
    assert not netns.link_is_up("veth0")
    _, log = secured.stop()
    assert f"event=connect uid={identities.outsider.uid}" in log and "result=refused" in log


@pytest.mark.parametrize(
    ("op", "link", "rule"),
    [
        ("up", "lo", "vcan links nobody owns and names matching veth0"),
        ("down", "veth1", "vcan links nobody owns and names matching veth0"),
        ("delete", "veth0", "only deletes vcan and vxcan links"),
    ],
)
def test_member_is_refused_unlisted_links(
    netns: Netns, secured: DaemonProcess, identities: Identities, op: str, link: str, rule: str
) -> None:
    netns.ip("link", "set", "veth1", "up")
    before = netns.ip("-o", "link", "show", link)

    def attempt() -> None:
        with DaemonClient(secured.path) as client:
            getattr(client, op)(link)

    with pytest.raises(hycan.PermissionDenied, match=rule) as info:
        run_as(identities.member, attempt)
    assert info.value.code == ErrorCode.PERMISSION_DENIED
    assert netns.ip("-o", "link", "show", link) == before
    _, log = secured.stop()
    assert f"name={link} result=error code=10" in log


def check_capabilities(pid: int) -> dict[str, str]:
    status = proc_status(pid)
    assert status["CapEff"] == status["CapPrm"] == status["CapBnd"] == NET_ADMIN_ONLY
    assert status["CapInh"] == status["CapAmb"] == NOTHING
    assert status["NoNewPrivs"] == "1"
    return status


def test_daemon_keeps_only_cap_net_admin(secured: DaemonProcess, netns: Netns) -> None:
    assert secured.proc is not None
    status = check_capabilities(secured.proc.pid)
    assert status["Uid"].split()[0] == "0"
    with DaemonClient(secured.path) as client:  # and it can still do its job
        client.up("veth0")
    assert netns.link_is_up("veth0")


def test_daemon_with_user_keeps_only_cap_net_admin(
    netns: Netns, shared_dir: Path, identities: Identities
) -> None:
    shared_dir.chmod(0o1777)  # like /tmp: the service user can remove the socket it owns
    proc = start_daemon(netns, shared_dir, identities, "--user", identities.service.name)
    try:
        assert proc.proc is not None
        status = check_capabilities(proc.proc.pid)
        assert status["Uid"].split() == [str(identities.service.uid)] * 4
        assert status["Gid"].split() == [str(identities.service.gid)] * 4
        assert status["Groups"] == ""
        # The socket listened before the switch, so SO_PEERCRED names root; a daemon that
        # listens as that user is trusted by a root client only through daemon_uid=, never
        # through $HYCAN_DAEMON_UID.
        with DaemonClient(proc.path, daemon_uid=identities.service.uid) as client:
            client.up("veth0")
        assert netns.link_is_up("veth0")
    finally:
        proc.stop()


def test_client_refuses_server_with_unexpected_uid(
    shared_dir: Path, identities: Identities
) -> None:
    shared_dir.chmod(0o1777)  # like /tmp: anyone may create a socket here
    path = str(shared_dir / "squat.sock")
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a squatter: another user serving a look-alike socket
        try:
            os.setresgid(identities.outsider.gid, *[identities.outsider.gid] * 2)
            os.setresuid(identities.outsider.uid, *[identities.outsider.uid] * 2)
            server = socket.socket(socket.AF_UNIX)
            server.bind(path)
            os.chmod(path, 0o666)
            server.listen()
            os.write(ready_w, b"x")
            conn, _ = server.accept()
            conn.recv(64)
            conn.sendall(ok('{"protocol":1,"version":"evil","backend":"x"}').encode())
        finally:
            os._exit(0)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"x", "the squatter failed to start"
        with (
            pytest.raises(hycan.PermissionDenied, match="someone else's socket"),
            DaemonClient(path) as client,
        ):
            client.ping()
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_allow_uid_keeps_the_socket_0660_and_adds_an_acl_entry(
    shared_dir: Path, identities: Identities
) -> None:
    allowed, stranger = identities.outsider, identities.service  # neither is in the group
    proc = DaemonProcess(
        str(shared_dir / "acl.sock"),
        "--backend",
        "memory",
        "--group",
        identities.group,
        "--allow-uid",
        str(allowed.uid),
    ).start()
    try:
        assert stat.S_IMODE(os.stat(proc.path).st_mode) == 0o660  # never opened to all
        assert os.getxattr(proc.path, "system.posix_acl_access")

        def ping() -> int:
            with DaemonClient(proc.path) as client:
                return int(client.ping()["protocol"])

        assert run_as(allowed, ping) == 1
        assert run_as(identities.member, ping) == 1
        with pytest.raises(hycan.HycanError, match=r"[Pp]ermission denied"):
            run_as(stranger, ping)  # refused by the kernel: it never reaches the daemon
    finally:
        _, log = proc.stop()
    assert f"uid={stranger.uid}" not in log
