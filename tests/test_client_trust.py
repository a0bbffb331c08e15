"""What a client trusts, with real throwaway users (root only): whom it lets serve it, and
what it says when the kernel or a stranger's socket stands in the way."""

from __future__ import annotations

import os
import pwd
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import hycan
from hycan import AsyncDaemonClient, AsyncNetlink, DaemonClient, Netlink
from hycan._caps import NET_ADMIN_MASK, CapState
from hycan._protocol import NEED_DATA, RequestDecoder, ok
from hycan._trust import privileged
from hycan.cli import build_parser, run
from hycan.errors import ErrorCode
from tests.identities import Identities, Identity, run_as
from tests.test_pytest_plugin import run_inner

pytest_plugins = ["pytester"]

PING_REPLY = ok('{"protocol":1,"version":"squat","backend":"x"}').encode()


class Squatter:
    """Another user serving a look-alike socket: answers every PING, and reports through a
    pipe how many request bytes each connection brought."""

    def __init__(self, path: str, who: Identity) -> None:
        self.path = path
        ready_r, ready_w = os.pipe()
        self._report_r, report_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the squatter
            try:
                os.setresgid(who.gid, who.gid, who.gid)
                os.setresuid(who.uid, who.uid, who.uid)
                server = socket.socket(socket.AF_UNIX)
                server.bind(path)
                os.chmod(path, 0o666)
                server.listen()
                os.write(ready_w, b"x")
                while True:
                    conn, _ = server.accept()
                    received = self._serve(conn)
                    os.write(report_w, f"{received}\n".encode())
            finally:
                os._exit(0)
        os.close(ready_w)
        os.close(report_w)
        started = os.read(ready_r, 1) == b"x"
        os.close(ready_r)
        if not started:
            self.stop()
            raise RuntimeError("the squatter failed to start")

    @staticmethod
    def _serve(conn: socket.socket) -> int:
        received = 0
        decoder = RequestDecoder()
        with conn:
            while data := conn.recv(4096):
                received += len(data)
                decoder.receive_data(data)
                while decoder.next_event() is not NEED_DATA:
                    conn.sendall(PING_REPLY)
        return received

    def bytes_received(self) -> int:
        """Request bytes of the next connection that ended (waits for it to end)."""
        line = b""
        while not line.endswith(b"\n"):
            line += os.read(self._report_r, 1)
        return int(line)

    def stop(self) -> None:
        os.kill(self.pid, 9)
        os.waitpid(self.pid, 0)
        os.close(self._report_r)


@pytest.fixture
def squatter(shared_dir: Path, identities: Identities) -> Iterator[Squatter]:
    shared_dir.chmod(0o1777)  # like /tmp: anyone may create a socket here
    squat = Squatter(str(shared_dir / "squat.sock"), identities.outsider)
    yield squat
    squat.stop()


def test_squatter_refusal_warns_and_sends_nothing(
    squatter: Squatter, identities: Identities
) -> None:
    with pytest.raises(hycan.PermissionDenied) as info, DaemonClient(squatter.path) as client:
        client.ping()
    message = info.value.message
    outsider = identities.outsider
    assert "someone else's socket is at this path" in message
    assert f"uid {outsider.uid} ({outsider.name})" in message
    assert "HYCAN_DAEMON_UID" not in message and "daemon_uid" not in message
    assert squatter.bytes_received() == 0  # refused before the request was sent


def test_root_ignores_the_environment_but_not_the_caller(
    squatter: Squatter, identities: Identities, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYCAN_DAEMON_UID", str(identities.outsider.uid))
    assert os.geteuid() == 0
    with pytest.raises(hycan.PermissionDenied) as info, DaemonClient(squatter.path) as client:
        client.ping()
    assert "ignored in a privileged process" in info.value.message
    assert squatter.bytes_received() == 0
    uid = identities.outsider.uid
    with DaemonClient(squatter.path, daemon_uid=uid) as client:
        assert client.ping()["version"] == "squat"
    with Netlink("squat0", create=False, socket_path=squatter.path, daemon_uid=uid) as net:
        assert net.client.ping()["version"] == "squat"


async def test_root_trio_client_takes_the_uid_from_the_caller(
    squatter: Squatter, identities: Identities, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYCAN_DAEMON_UID", str(identities.outsider.uid))
    with pytest.raises(hycan.PermissionDenied):
        await AsyncDaemonClient(squatter.path).ping()
    uid = identities.outsider.uid
    async with AsyncDaemonClient(squatter.path, daemon_uid=uid) as client:
        assert (await client.ping())["version"] == "squat"
    net = await AsyncNetlink.open("squat0", create=False, socket_path=squatter.path, daemon_uid=uid)
    async with net:
        assert (await net.client.ping())["version"] == "squat"


def test_cli_takes_the_daemon_uid_option(squatter: Squatter, identities: Identities) -> None:
    argv = ["--socket", squatter.path, "ping"]
    code, _, text = run(build_parser().parse_args(argv))
    assert code == 1 and "someone else's socket" in text
    uid = str(identities.outsider.uid)
    code, result, _ = run(build_parser().parse_args(["--daemon-uid", uid, *argv]))
    assert code == 0 and result["version"] == "squat"


def test_pytest_plugin_reports_a_refusal_even_when_told_to_skip(
    squatter: Squatter, pytester: pytest.Pytester
) -> None:
    pytester.makepyfile("def test_uses_vcan(vcan):\n    pass\n")
    result = run_inner(pytester, "--hycan-socket", squatter.path, "--hycan-skip-unavailable")
    result.assert_outcomes(errors=1)
    output = result.stdout.str()
    assert "hycan: no vcan for this test: refusing to use" in output
    assert "someone else's socket" in output and "Traceback" not in output


def test_unprivileged_client_honours_the_environment(
    squatter: Squatter, identities: Identities, monkeypatch: pytest.MonkeyPatch
) -> None:
    def ping() -> str:
        with DaemonClient(squatter.path) as client:
            return str(client.ping()["version"])

    monkeypatch.setenv("HYCAN_DAEMON_UID", str(identities.outsider.uid))
    assert run_as(identities.member, ping) == "squat"
    monkeypatch.delenv("HYCAN_DAEMON_UID")
    with pytest.raises(hycan.PermissionDenied, match="someone else's socket"):
        run_as(identities.member, ping)


@pytest.mark.parametrize(
    ("ids", "effective", "expected"),
    [
        ((1000, 1000, 1000, 1000), 0, False),  # uid, euid, gid, egid
        ((0, 0, 0, 0), 0, True),
        ((1000, 0, 1000, 1000), 0, True),  # set-uid
        ((1000, 1000, 1000, 50), 0, True),  # set-gid
        ((1000, 1000, 1000, 1000), NET_ADMIN_MASK, True),  # a capability, e.g. file caps
        ((1000, 1000, 1000, 1000), None, True),  # no /proc: assume the worst
    ],
)
def test_who_counts_as_privileged(
    monkeypatch: pytest.MonkeyPatch,
    ids: tuple[int, int, int, int],
    effective: int | None,
    expected: bool,
) -> None:
    def caps(pid: str) -> CapState:
        if effective is None:
            raise FileNotFoundError(f"/proc/{pid}/status")
        return CapState(effective, effective, 0, effective, 0, False)

    for name, value in zip(("getuid", "geteuid", "getgid", "getegid"), ids, strict=True):
        monkeypatch.setattr(os, name, lambda value=value: value)
    monkeypatch.setattr("hycan._caps.read_cap_state", caps)
    assert privileged() is expected


# --- the kernel refuses the connect ------------------------------------------------------


@pytest.fixture
def group_socket(shared_dir: Path, identities: Identities) -> Iterator[str]:
    """A root-owned listening socket like the daemon's: ``root:GROUP 0660``."""
    path = str(shared_dir / "hycan.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        os.chown(path, 0, identities.gid)
        os.chmod(path, 0o660)
        listener.listen()
        yield path


def connect(path: str) -> str:
    with DaemonClient(path) as client:
        return client.socket_path


def refusal(who: Identity, path: str) -> hycan.PermissionDenied:
    with pytest.raises(hycan.PermissionDenied) as info:
        run_as(who, lambda: connect(path))
    assert info.value.code == ErrorCode.PERMISSION_DENIED
    return info.value


def test_member_connects(group_socket: str, identities: Identities) -> None:
    assert run_as(identities.member, lambda: connect(group_socket)) == group_socket


def test_outsider_is_told_to_join_the_group(group_socket: str, identities: Identities) -> None:
    message = refusal(identities.outsider, group_socket).message
    group = identities.group
    assert f"you are not in group {group}" in message
    assert f"`sudo usermod -aG {group} $USER`, then log in again" in message
    assert f"(your current groups: {identities.outsider.name})" in message


def test_member_of_a_newer_session_is_told_to_log_in_again(
    group_socket: str, identities: Identities
) -> None:
    member = identities.member
    stale = Identity(member.name, member.uid, member.gid, (member.gid,))  # added since login
    message = refusal(stale, group_socket).message
    assert f"lists you in group {identities.group}" in message
    assert f"log in again or run `newgrp {identities.group}`" in message
    assert "usermod" not in message


def test_cli_exits_one_when_the_kernel_refuses(group_socket: str, identities: Identities) -> None:
    def cli() -> tuple[int, str]:
        code, _, text = run(build_parser().parse_args(["--socket", group_socket, "ping"]))
        return code, text

    code, text = run_as(identities.outsider, cli)
    assert code == 1 and f"not in group {identities.group}" in text


def test_root_only_socket_is_not_a_group_to_join(group_socket: str, identities: Identities) -> None:
    os.chown(group_socket, 0, 0)
    message = refusal(identities.outsider, group_socket).message
    assert "usermod" not in message and "only root" in message


def test_closed_directory_is_named(
    group_socket: str, shared_dir: Path, identities: Identities
) -> None:
    shared_dir.chmod(0o700)
    message = refusal(identities.member, group_socket).message
    assert f"a directory on the way to {group_socket}" in message


def test_member_refused_by_the_socket_mode_is_told_so(
    group_socket: str, identities: Identities
) -> None:
    os.chmod(group_socket, 0o600)
    message = refusal(identities.member, group_socket).message
    assert "usermod" not in message and "0600" in message
    assert stat.S_IMODE(os.stat(group_socket).st_mode) == 0o600
    assert pwd.getpwuid(os.stat(group_socket).st_uid).pw_name in message
