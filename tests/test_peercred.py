"""hycan._peercred: SO_PEERCRED + SO_PEERGROUPS, and the group-database fallback."""

from __future__ import annotations

import errno
import os
import pwd
import socket
import sys
import tempfile
import traceback
from collections.abc import Iterator

import pytest

from hycan._peercred import SO_PEERGROUPS, PeerCredentials, peer_credentials


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        yield a, b


class NoPeerGroups:
    """A socket as seen on a kernel before 4.13: SO_PEERGROUPS fails with ENOPROTOOPT."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes:
        if (level, optname) == (socket.SOL_SOCKET, SO_PEERGROUPS):
            raise OSError(errno.ENOPROTOOPT, os.strerror(errno.ENOPROTOOPT))
        return self._sock.getsockopt(level, optname, buflen)


def test_socketpair_is_ourselves(pair: tuple[socket.socket, socket.socket]) -> None:
    for end in pair:
        creds = peer_credentials(end)
        assert (creds.pid, creds.uid, creds.gid) == (os.getpid(), os.getuid(), os.getgid())
        # Exactly our supplementary groups, sorted by the kernel; the primary gid is
        # not added (it shows up only if it is a supplementary group as well).
        assert creds.groups == tuple(sorted(os.getgroups()))


def test_unconnected_socket_is_an_error() -> None:
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock,
        pytest.raises(OSError) as info,
    ):
        peer_credentials(sock)
    assert info.value.errno == errno.ENODATA


def test_fallback_uses_group_database(pair: tuple[socket.socket, socket.socket]) -> None:
    creds = peer_credentials(NoPeerGroups(pair[0]))
    name = pwd.getpwuid(os.getuid()).pw_name
    assert creds == PeerCredentials(
        os.getpid(), os.getuid(), os.getgid(), tuple(os.getgrouplist(name, os.getgid()))
    )


def test_fallback_without_passwd_entry(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_such_uid(uid: int) -> pwd.struct_passwd:
        raise KeyError(uid)

    monkeypatch.setattr(pwd, "getpwuid", no_such_uid)
    assert peer_credentials(NoPeerGroups(pair[0])).groups == (os.getgid(),)


def _connect_as(path: str, uid: int, gid: int, groups: list[int]) -> None:
    """Forked child: become uid/gid/groups, connect, wait for the server's byte, exit."""
    status = 1
    try:
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            if sock.recv(1) == b"k":
                status = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(status)


@pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root to connect as another uid (CI runs as root)"
)
@pytest.mark.parametrize(
    "groups",
    [[4444], list(range(5299, 4999, -1))],  # 300 groups: more than getsockopt's 1024 bytes
    ids=["one-group", "300-groups"],
)
def test_peer_with_other_uid_gid_groups(groups: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o711)
        path = os.path.join(tmp, "sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(path)
            os.chmod(path, 0o666)
            listener.listen(1)
            listener.settimeout(30)  # a child that fails to connect must not hang the test
            pid = os.fork()
            if pid == 0:
                _connect_as(path, 4242, 4343, groups)
            try:
                conn, _ = listener.accept()
                with conn:
                    creds = peer_credentials(conn)
                    conn.sendall(b"k")
            finally:
                _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0
    assert creds == PeerCredentials(pid, 4242, 4343, tuple(sorted(groups)))
