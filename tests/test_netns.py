"""Real kernel, as root: the netlink backend in a throwaway netns with a veth pair."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import hycan
from hycan import DaemonClient, Netlink
from tests.conftest import DaemonProcess, Netns

pytestmark = pytest.mark.netns


def test_daemon_brings_veth_up_and_down(netns: Netns, netns_daemon: DaemonProcess) -> None:
    with Netlink("veth0", create=False, socket_path=netns_daemon.path) as net:
        assert not netns.link_is_up("veth0")
        net.up()
        assert netns.link_is_up("veth0")
        status = net.status()
        assert (status.exists, status.kind, status.up, status.mtu) == (True, "veth", True, 1500)
        net.down()
        assert not netns.link_is_up("veth0")


def test_kernel_errors_are_mapped(netns: Netns, netns_daemon: DaemonProcess) -> None:
    with DaemonClient(netns_daemon.path) as client:
        with pytest.raises(hycan.InterfaceNotFound, match="missing0 not found"):
            client.up("missing0")
        # The host kernel has no vcan module: the message users in containers hit.
        with pytest.raises(hycan.NotSupported, match="modprobe vcan"):
            client.create("vcan0")
        with pytest.raises(hycan.PermissionDenied, match="only deletes vcan"):
            client.delete("veth1")  # allow-listed for up/down, but never deleted
        with pytest.raises(hycan.PermissionDenied, match="refusing to bring up lo"):
            client.up("lo")
        assert not client.status("nothere0").exists
    assert "veth1" in netns.ip("link", "show")


def test_in_process_fallback_without_daemon(netns: Netns, tmp_path: Path) -> None:
    # Root holds CAP_NET_ADMIN: with no daemon and no explicit socket, the client acts
    # in-process through the netlink backend; spawning anything is forbidden in the child.
    script = textwrap.dedent(
        """
        import subprocess, os
        def forbidden(*a, **k):
            raise AssertionError("fallback must not spawn processes")
        subprocess.Popen = forbidden
        os.system = forbidden
        import hycan._paths as paths
        paths.SYSTEM_SOCKET = "/nonexistent/system.sock"
        paths.MANUAL_SOCKET = "/nonexistent/manual.sock"
        from hycan import Netlink
        with Netlink("veth0", create=False) as net:
            assert net.client.socket_path == "in-process"
            net.up()
            print(net.status().up)
        """
    )
    result = netns.python(script, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
    assert netns.link_is_up("veth0")


def test_no_fallback_when_disabled(netns: Netns) -> None:
    script = (
        "import hycan._paths as p; p.SYSTEM_SOCKET=p.MANUAL_SOCKET='/nonexistent/x.sock';"
        "import hycan\n"
        "try:\n    hycan.Netlink('veth0', create=False)\n"
        "except hycan.DaemonUnavailable as e:\n    print('unavailable')\n"
    )
    result = netns.python(script, env={"PATH": "/usr/bin:/bin", "HYCAN_NO_FALLBACK": "1"})
    assert result.stdout.strip() == "unavailable", result.stderr


def test_broken_netlink_socket_is_reopened(netns: Netns) -> None:
    script = textwrap.dedent(
        """
        from hycan.backends.netlink import NetlinkBackend
        backend = NetlinkBackend()
        backend._sock.close()  # the kernel side broke (or someone closed our fd)
        try:
            backend.status("lo")
        except OSError as exc:
            print("failed once:", exc.errno)
        print("then:", backend.status("lo").exists)
        """
    )
    result = netns.python(script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["failed once: 9", "then: True"]


def test_altnames_do_not_bypass_the_allow_list(netns: Netns, tmp_path: Path) -> None:
    # veth1 is not allow-listed but gets an altname that matches the glob; veth0 is
    # allow-listed and gets an altname that does not. The policy judges the link itself.
    netns.ip("link", "property", "add", "dev", "veth1", "altname", "veth-okalt")
    netns.ip("link", "property", "add", "dev", "veth0", "altname", "other0")
    daemon = DaemonProcess(
        str(tmp_path / "alt.sock"),
        "--backend",
        "netlink",
        "--allow-iface",
        "veth-ok*",
        "--allow-iface",
        "veth0",
        prefix=("ip", "netns", "exec", netns.name),
    ).start()
    try:
        with DaemonClient(daemon.path) as client:
            with pytest.raises(hycan.PermissionDenied, match="refusing to bring up veth1"):
                client.up("veth-okalt")
            with pytest.raises(hycan.PermissionDenied, match="set the MTU of veth1"):
                client.set_mtu("veth-okalt", 1400)
            assert client.up("other0") == "veth0 is up"
            assert client.status("other0").name == "veth0"
        assert not netns.link_is_up("veth1") and "mtu 1500" in netns.ip("link", "show", "veth1")
        assert netns.link_is_up("veth0")
    finally:
        _, log = daemon.stop()
    assert "op=INTERFACE_UP name=veth1 requested=veth-okalt result=error code=10" in log
    assert "op=INTERFACE_UP name=veth0 requested=other0 result=ok" in log
