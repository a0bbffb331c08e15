"""The policy's kind cache against the real kernel (as root, in a throwaway netns).

A script runs inside the netns: it asks ``NetlinkBackend.kind()`` while it changes links
with ``ip``, and counts how often the backend had to ask the kernel (RTM_GETLINK).
"""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.conftest import Netns

pytestmark = pytest.mark.netns

SCRIPT = textwrap.dedent(
    """
    import json, socket, subprocess
    from hycan.backends.netlink import NetlinkBackend

    backend = NetlinkBackend()
    asked = []
    status = backend.status
    backend.status = lambda name: asked.append(name) or status(name)
    steps = []

    def ip(*args):
        subprocess.run(["ip", "link", *args], check=True)

    def kind(label, name):
        try:
            answer = backend.kind(name)
        except OSError as exc:
            answer = f"errno {exc.errno}"
        steps.append([label, name, answer, len(asked)])

    kind("first lookup", "veth0")
    kind("cached", "veth0")
    backend.set_up("veth0", True)
    backend.set_up("veth0", False)
    kind("after our own toggles", "veth0")
    kind("missing", "gone0")
    kind("missing, cached", "gone0")
    ip("add", "gone0", "type", "bridge")
    kind("created since", "gone0")
    ip("set", "veth0", "name", "renamed0")
    kind("renamed away", "veth0")
    kind("new name", "renamed0")
    ip("del", "gone0")
    ip("add", "gone0", "type", "veth", "peer", "name", "peer0")
    kind("deleted and recreated as another kind", "gone0")

    # Overflow: a tiny receive buffer, flooded while we do not look; then a rename whose
    # notification is lost. The cache must notice the loss and not answer from memory.
    kind("before the flood", "veth1")
    kinds = backend._kinds
    kinds._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256)
    for i in range(40):
        ip("set", "peer0", "up" if i % 2 == 0 else "down")
    ip("set", "veth1", "name", "moved1")
    kind("after lost notifications", "veth1")
    kind("its new name", "moved1")
    print(json.dumps(steps))
    """
)


def test_kind_cache_stays_exact(netns: Netns) -> None:
    result = netns.python(SCRIPT)
    assert result.returncode == 0, result.stderr
    steps = {label: tuple(rest) for label, *rest in json.loads(result.stdout)}
    assert steps["first lookup"] == ("veth0", "veth", 1)
    assert steps["cached"] == ("veth0", "veth", 1)  # no second RTM_GETLINK
    assert steps["after our own toggles"] == ("veth0", "veth", 1)
    assert steps["missing"] == ("gone0", "errno 19", 2)
    assert steps["missing, cached"] == ("gone0", "errno 19", 2)
    assert steps["created since"][:2] == ("gone0", "bridge")
    assert steps["renamed away"][:2] == ("veth0", "errno 19")
    assert steps["new name"][:2] == ("renamed0", "veth")
    assert steps["deleted and recreated as another kind"][:2] == ("gone0", "veth")
    assert steps["after lost notifications"][:2] == ("veth1", "errno 19")
    assert steps["its new name"][:2] == ("moved1", "veth")
    # Nothing answered from a stale entry: every changed name was asked again.
    counts = [asked for _, _, asked in steps.values()]
    assert counts == sorted(counts)
