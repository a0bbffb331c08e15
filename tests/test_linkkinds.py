"""The link cache behind name resolution, against the real kernel (root, throwaway netns).

A script runs inside the netns: it asks ``NetlinkBackend.resolve()`` while it changes links
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
            link = backend.resolve(name)
            answer = link.kind if link.name == name else f"{link.kind} {link.name}"
        except OSError as exc:
            answer = f"errno {exc.errno}"
        steps.append([label, name, answer, len(asked)])

    kind("first lookup", "veth0")
    kind("cached", "veth0")
    backend.set_up(backend.resolve("veth0"), True)
    backend.set_up(backend.resolve("veth0"), False)
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

    # Altnames resolve to the link's own name, and are never answered from memory.
    ip("property", "add", "dev", "renamed0", "altname", "alias0")
    kind("an altname", "alias0")
    kind("an altname again", "alias0")
    kind("missing before it became an altname", "late0")
    ip("property", "add", "dev", "renamed0", "altname", "late0")  # renamed0 is down: no news
    kind("an altname added to a down link", "late0")
    ip("set", "renamed0", "up")  # its notification lists its altnames
    kind("after the link's next notification", "late0")

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
    assert steps["an altname"][:2] == ("alias0", "veth renamed0")
    assert steps["an altname again"][2] == steps["an altname"][2] + 1  # asked the kernel again
    assert steps["an altname added to a down link"][:2] == ("late0", "errno 19")  # documented
    assert steps["after the link's next notification"][:2] == ("late0", "veth renamed0")
    assert steps["after lost notifications"][:2] == ("veth1", "errno 19")
    assert steps["its new name"][:2] == ("moved1", "veth")
    # Nothing answered from a stale entry: every changed name was asked again.
    counts = [asked for _, _, asked in steps.values()]
    assert counts == sorted(counts)
