"""The link cache behind name resolution, against the real kernel (root, throwaway netns).

A script runs inside the netns: it asks ``NetlinkBackend.resolve()`` while it changes links
with ``ip``, and counts how often the backend had to ask the kernel (RTM_GETLINK). Orders
of announcements a test cannot make the kernel produce are fed to the cache instead.
"""

from __future__ import annotations

import errno
import json
import textwrap

import pytest
from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_NEWLINK

from hycan.backends._linkkinds import LinkKinds
from hycan.backends._linkreq import link_request
from hycan.backends.base import LinkRef
from tests.conftest import Netns

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


@pytest.mark.netns
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


CREATES = textwrap.dedent(
    """
    import json, socket, subprocess
    from hycan.backends.netlink import NetlinkBackend

    backend = NetlinkBackend()
    asked = []
    status = backend.status
    backend.status = lambda name: asked.append(name) or status(name)

    def ip(*args):
        subprocess.run(["ip", "link", *args], check=True)

    def index(name):
        out = subprocess.run(["ip", "-j", "link", "show", name], capture_output=True, text=True)
        return json.loads(out.stdout)[0]["ifindex"]

    def seen(name):
        link = backend.resolve(name)
        return [link.name, link.kind, link.ifindex == index(name), len(asked)]

    steps = {}
    backend.add_link("made0", "bridge")
    steps["created"] = seen("made0")
    backend.add_link("pair0", "veth", peer="pair1", up=True)
    steps["a pair's end"] = seen("pair0")
    steps["its peer"] = seen("pair1")
    # A link of the name comes and goes unseen (no lookup between), then ours is created:
    # the older link's announcement is read first and must not stick.
    backend.resolve("made0")
    ip("add", "old0", "type", "veth", "peer", "name", "old1")
    ip("del", "old0")
    backend.add_link("old0", "bridge")
    steps["created after an older link of its name"] = seen("old0")
    # The same, with the announcements overflowing the cache's buffer unseen: the older
    # link's is kept, the rest (its deletion, our create) lost.
    backend._kinds._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256)
    ip("add", "lost0", "type", "bridge")
    for i in range(20):
        ip("set", "lost0", "up" if i % 2 == 0 else "down")
    ip("del", "lost0")
    backend.add_link("lost0", "veth", peer="lost1")
    steps["created after lost announcements"] = seen("lost0")
    print(json.dumps(steps))
    """
)


@pytest.mark.netns
def test_a_created_link_is_learned_from_its_announcement(netns: Netns) -> None:
    result = netns.python(CREATES)
    assert result.returncode == 0, result.stderr
    steps = json.loads(result.stdout)
    assert steps["created"] == ["made0", "bridge", True, 0]  # no RTM_GETLINK
    assert steps["a pair's end"] == ["pair0", "veth", True, 0]
    assert steps["its peer"] == ["pair1", "veth", True, 0]
    assert steps["created after an older link of its name"][:3] == ["old0", "bridge", True]
    assert steps["created after lost announcements"][:3] == ["lost0", "veth", True]


class _Announcements:
    """Stands in for the cache's notification socket: these datagrams, then nothing."""

    def __init__(self, *messages: tuple[int, int, str] | OSError) -> None:
        self._data = [
            m if isinstance(m, OSError) else bytes(link_request(m[0], 0, index=m[1], name=m[2]))
            for m in messages
        ]

    def recv(self, size: int) -> bytes:
        if not self._data:
            raise BlockingIOError
        data = self._data.pop(0)
        if isinstance(data, OSError):
            raise data
        return data

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("announced", "learned"),
    [
        ([(RTM_NEWLINK, 7, "n0")], LinkRef(7, "n0", "bridge", None)),
        # An older n0, gone before the create: nothing kept, n0 is asked of the kernel.
        ([(RTM_NEWLINK, 5, "n0"), (RTM_DELLINK, 5, "n0"), (RTM_NEWLINK, 7, "n0")], None),
        # Ours, deleted and replaced by someone else's n0 of unknown kind: not taken as ours.
        ([(RTM_NEWLINK, 7, "n0"), (RTM_DELLINK, 7, "n0"), (RTM_NEWLINK, 9, "n0")], None),
        # Ours, renamed away: n0 is free again, its new name is not learned as a bridge.
        ([(RTM_NEWLINK, 7, "n0"), (RTM_NEWLINK, 7, "m0")], None),
        # Lost announcements (ours among them): what follows is older, an n0 since deleted.
        ([OSError(errno.ENOBUFS, "lost"), (RTM_NEWLINK, 5, "n0")], None),
        ([(RTM_NEWLINK, 7, "n0"), OSError(errno.ENOBUFS, "lost"), (RTM_NEWLINK, 5, "n0")], None),
    ],
)
def test_only_the_created_link_is_learned(
    announced: list[tuple[int, int, str] | OSError], learned: LinkRef | None
) -> None:
    kinds = LinkKinds()
    kinds._sock.close()
    kinds._sock = _Announcements(*announced)  # type: ignore[assignment]
    kinds.created({"n0": "bridge"})
    assert kinds.lookup("n0") == learned
    assert kinds.lookup("m0") is None
