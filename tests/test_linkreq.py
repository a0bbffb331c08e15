"""Link requests packed with struct (``backends/_linkreq.py``) are pyroute2's, byte for byte.

Every request the netlink backend sends is captured at its socket's boundary
(``_transact``) and compared with what pyroute2's ``ifinfmsg`` builds for the same
request, in the daemon's namespace and for another one (IFLA_NET_NS_FD on a create,
IFLA_IF_NETNSID on the rest). Needs no privilege: nothing reaches the kernel.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_GETLINK, RTM_NEWLINK
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg

from hycan.backends.base import LinkRef
from hycan.backends.netlink import RTEXT_FILTER_SKIP_STATS, NetlinkBackend

NAMES = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=15)
ALIASES = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=120)
LINKS = st.builds(LinkRef, st.integers(1, 2**31 - 1), NAMES, st.just("vcan"), st.none())
PLACES = st.sampled_from([None, (7, 3), (1023, 0), (5, 2**31 - 1)])  # (netns fd, its nsid)


def pyroute2_request(
    msg_type: int,
    nl_flags: int,
    *,
    index: int = 0,
    attrs: list[Any] | None = None,
    flags: int | None = None,
    change: int | None = None,
    kind: str | None = None,
    peer: str | None = None,
    ack: bool = True,
) -> bytes:
    """The request as pyroute2 builds it (the backend's builder before L18-4)."""
    msg = ifinfmsg()
    msg["index"] = index
    if flags is not None:
        msg["flags"] = flags
    if change is not None:
        msg["change"] = change
    nlas = list(attrs or [])
    if kind is not None:
        info: list[Any] = [("IFLA_INFO_KIND", kind)]
        if peer is not None:
            peer_info = {"attrs": [("IFLA_IFNAME", peer)]}
            info.append(("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer_info)]}))
        nlas.append(("IFLA_LINKINFO", {"attrs": info}))
    msg["attrs"] = nlas
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = NLM_F_REQUEST | (NLM_F_ACK if ack else 0) | nl_flags
    msg["header"]["sequence_number"] = 0
    msg.encode()
    return bytes(msg.data)


@pytest.fixture(scope="module")
def backend() -> Iterator[NetlinkBackend]:
    made = NetlinkBackend()
    yield made
    made.close()


def sent_by(
    backend: NetlinkBackend, place: tuple[int, int] | None, call: Callable[[], object]
) -> bytes:
    """The one frame ``call`` hands to the socket, sequence number zeroed; the kernel's
    answer is a success (ENODEV for a GET of one link, so STATUS needs no reply to parse)."""
    frames: list[bytes] = []

    def transact(frame: bytes, seq: int, **kwargs: Any) -> tuple[int, None]:
        frames.append(bytes(frame[:8]) + bytes(4) + bytes(frame[12:]))
        dump = int.from_bytes(frame[6:8], "little") & NLM_F_DUMP
        single_get = frame[4] == RTM_GETLINK and not dump
        return (errno.ENODEV if single_get else 0), None

    saved = backend._netns, backend._nsid, backend._kinds
    backend._netns = None if place is None else SimpleNamespace(fd=place[0])  # type: ignore[assignment]
    backend._nsid = None if place is None else place[1]
    backend._kinds = None
    backend._transact = transact  # type: ignore[method-assign]
    try:
        call()
    finally:
        del backend._transact
        backend._netns, backend._nsid, backend._kinds = saved
    assert len(frames) == 1
    return frames[0]


def target(place: tuple[int, int] | None) -> list[Any]:
    return [] if place is None else [("IFLA_IF_NETNSID", place[1])]


@settings(max_examples=300, deadline=None)
@given(
    name=NAMES,
    kind=st.sampled_from(["vcan", "vxcan", "veth", "can"]),
    peer=NAMES,
    up=st.booleans(),
    place=PLACES,
)
def test_a_create_is_pyroute2s(
    backend: NetlinkBackend,
    name: str,
    kind: str,
    peer: str,
    up: bool,
    place: tuple[int, int] | None,
) -> None:
    """Only a vxcan (the handler checks it) or a veth has a peer."""
    peer = peer if kind in ("vxcan", "veth") else None
    frame = sent_by(backend, place, lambda: backend.add_link(name, kind, peer=peer, up=up))
    attrs: list[Any] = [("IFLA_IFNAME", name)]
    attrs += [] if place is None else [("IFLA_NET_NS_FD", place[0])]
    flags = IFF_UP if up else None
    expected = pyroute2_request(
        RTM_NEWLINK,
        NLM_F_CREATE | NLM_F_EXCL,
        attrs=attrs,
        kind=kind,
        peer=peer,
        flags=flags,
        change=flags,
    )
    assert frame == expected


@settings(max_examples=300, deadline=None)
@given(link=LINKS, up=st.booleans(), mtu=st.integers(0, 2**32 - 1), alias=ALIASES, place=PLACES)
def test_changes_by_index_are_pyroute2s(
    backend: NetlinkBackend, link: LinkRef, up: bool, mtu: int, alias: str, place: Any
) -> None:
    index, where = link.ifindex, target(place)
    toggle = sent_by(backend, place, lambda: backend.set_up(link, up))
    assert toggle == pyroute2_request(
        RTM_NEWLINK, 0, index=index, flags=IFF_UP if up else 0, change=IFF_UP, attrs=where
    )
    delete = sent_by(backend, place, lambda: backend.delete_link(link))
    assert delete == pyroute2_request(RTM_DELLINK, 0, index=index, attrs=where)
    sized = sent_by(backend, place, lambda: backend.set_mtu(link, mtu))
    assert sized == pyroute2_request(RTM_NEWLINK, 0, index=index, attrs=[("IFLA_MTU", mtu), *where])
    named = sent_by(backend, place, lambda: backend.set_alias(link, alias))
    assert named == pyroute2_request(
        RTM_NEWLINK, 0, index=index, attrs=[("IFLA_IFALIAS", alias), *where]
    )


@settings(max_examples=200, deadline=None)
@given(name=NAMES, place=PLACES)
def test_queries_are_pyroute2s(backend: NetlinkBackend, name: str, place: Any) -> None:
    mask = [("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)]
    status = sent_by(backend, place, lambda: backend.status(name))
    assert status == pyroute2_request(
        RTM_GETLINK, 0, attrs=[("IFLA_IFNAME", name), *target(place), *mask], ack=False
    )


@pytest.mark.parametrize("place", [None, (7, 3)])
def test_a_dump_is_pyroute2s(backend: NetlinkBackend, place: Any) -> None:
    mask = [("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)]
    dump = sent_by(backend, place, backend.links)
    attrs = [*target(place), *mask]
    assert dump == pyroute2_request(RTM_GETLINK, NLM_F_DUMP, attrs=attrs, ack=False)
