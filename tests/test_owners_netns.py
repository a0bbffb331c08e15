"""Owners and the policy file on a real kernel (root, a throwaway netns and users).

The host kernel has no vcan, so the veth pair stands in: root writes the owner record into
a veth's alias exactly as hycan writes it into the vcans it creates (the VM tests create
real vcans through the daemon), and the netlink daemon must read it from the kernel.
"""

from __future__ import annotations

import json
import signal
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import hycan
from hycan import DaemonClient
from tests.conftest import DaemonProcess, Netns, group_daemon
from tests.identities import Identities, run_as

pytestmark = pytest.mark.netns


def start_daemon(netns: Netns, shared_dir: Path, ids: Identities, *extra: str) -> DaemonProcess:
    return group_daemon(netns, shared_dir, ids.group, *extra)


def call(path: str, op: str, link: str) -> Callable[[], str]:
    def do() -> str:
        with DaemonClient(path) as client:
            message: str = getattr(client, op)(link)
            return message

    return do


def status_of(path: str, link: str) -> Callable[[], str]:
    def do() -> str:
        with DaemonClient(path) as client:
            return client.status(link).to_json()

    return do


def test_owner_recorded_in_the_kernel_survives_a_daemon_restart(
    netns: Netns, shared_dir: Path, identities: Identities
) -> None:
    member, other = identities.member, identities.member2
    netns.ip("link", "set", "veth0", "alias", f"hycan owner={member.uid}")
    for _round in range(2):  # the second daemon knows only what the kernel says
        daemon = start_daemon(netns, shared_dir, identities, "--allow-iface", "veth*")
        try:
            with pytest.raises(hycan.PermissionDenied) as info:
                run_as(other, call(daemon.path, "up", "veth0"))
            assert f"veth0 belongs to uid {member.uid} ({member.name})" in info.value.message
            assert not netns.link_is_up("veth0")
            assert run_as(member, call(daemon.path, "up", "veth0")) == "veth0 is up"
            assert run_as(member, call(daemon.path, "down", "veth0")) == "veth0 is down"
            # veth1 belongs to nobody: the --allow-iface rule alone decides
            assert run_as(other, call(daemon.path, "up", "veth1")) == "veth1 is up"

            reported = json.loads(run_as(other, status_of(daemon.path, "veth0")))
            assert (reported["owner"], reported["lease"]) == (member.uid, False)
        finally:
            daemon.stop()


def test_an_alias_changed_by_root_is_seen_at_once(
    netns: Netns, shared_dir: Path, identities: Identities
) -> None:
    """The daemon's link cache follows the kernel's notifications: a new owner applies
    to the very next request, with no restart."""
    daemon = start_daemon(netns, shared_dir, identities, "--allow-iface", "veth*")
    try:
        member, other = identities.member, identities.member2
        assert run_as(other, call(daemon.path, "up", "veth0")) == "veth0 is up"  # cached now
        netns.ip("link", "set", "veth0", "alias", f"hycan owner={member.uid}")
        with pytest.raises(hycan.PermissionDenied, match="belongs to"):
            run_as(other, call(daemon.path, "down", "veth0"))
        netns.ip("link", "set", "veth0", "alias", "")  # the admin takes it back
        assert run_as(other, call(daemon.path, "down", "veth0")) == "veth0 is down"
    finally:
        daemon.stop()


def test_netlink_backend_records_and_lists_aliases(netns: Netns) -> None:
    script = textwrap.dedent(
        """
        import json
        from hycan.backends.netlink import NetlinkBackend
        b = NetlinkBackend()
        b.add_link("hyc-br0", "bridge")
        link = b.resolve("hyc-br0")
        b.set_alias(link, "hycan owner=1234 lease=1.2")
        listed = {s.name: s.alias for s in b.links()}
        print(json.dumps([listed, b.resolve("hyc-br0").alias, b.status("hyc-br0").alias]))
        """
    )
    result = netns.python(script)
    assert result.returncode == 0, result.stderr
    listed, resolved, status = json.loads(result.stdout)
    assert listed["hyc-br0"] == resolved == status == "hycan owner=1234 lease=1.2"
    assert listed["veth0"] is None and "lo" in listed
    assert "alias hycan owner=1234 lease=1.2" in netns.ip("link", "show", "hyc-br0")


def wait_for_log(daemon: DaemonProcess, text: str, timeout: float = 10) -> str:
    """The daemon's log once it holds ``text`` (polled: the log is a file)."""
    deadline = time.monotonic() + timeout
    while text not in (log := daemon.log()):
        assert daemon.proc is not None and daemon.proc.poll() is None, log
        assert time.monotonic() < deadline, f"{text!r} never logged:\n{log}"
        time.sleep(0.02)
    return log


def test_sighup_reloads_the_policy_and_a_broken_file_keeps_the_old_one(
    netns: Netns, shared_dir: Path, identities: Identities, tmp_path: Path
) -> None:
    member = identities.member
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\nallow = ["up", "down"]\nnames = ["veth0"]\n')
    daemon = start_daemon(netns, shared_dir, identities, "--policy", str(policy))
    try:
        assert run_as(member, call(daemon.path, "up", "veth0")) == "veth0 is up"
        # a connection that stays open across the reload
        client = DaemonClient(daemon.path)
        client.ping()
        policy.write_text(
            f'[[rule]]\nallow = ["up", "down"]\nnames = ["veth0"]\n'
            f'[[rule]]\ndeny = ["down"]\nusers = ["{member.name}"]\nnames = ["veth0"]\n'
        )
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for_log(daemon, "policy reloaded")
        with pytest.raises(hycan.PermissionDenied, match=r"denied by .*policy\.toml:4"):
            run_as(member, call(daemon.path, "down", "veth0"))
        assert netns.link_is_up("veth0")
        policy.write_text('[[rule]]\nallow = ["up", "dwon"]\n')  # broken
        daemon.proc.send_signal(signal.SIGHUP)
        log = wait_for_log(daemon, "policy not reloaded")
        assert "policy.toml:2:" in log and "dwon" in log
        with pytest.raises(hycan.PermissionDenied, match="denied by"):  # the old policy
            run_as(member, call(daemon.path, "down", "veth0"))
        client.ping()  # still connected, still served
        client.close()
    finally:
        daemon.stop()


def test_a_broken_policy_file_stops_the_daemon_from_starting(
    netns: Netns, shared_dir: Path, identities: Identities, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[[rule]]\nallow = ['up']\ncolour = 'blue'\n")
    with pytest.raises(RuntimeError, match=r"policy.toml:3:1: .*colour"):
        start_daemon(netns, shared_dir, identities, "--policy", str(policy))
