"""Links by name, cached and kept current by the kernel's link notifications.

The daemon resolves every name a client gives into the link the kernel would act on (its
index, own name, kind and alias, which records its owner) before the policy judges it.
Which link a name refers to changes: links are created, deleted, renamed and moved
between namespaces. The kernel announces every one of those changes on the RTNLGRP_LINK
multicast group, queued to each listener before the system call that made the change
returns. So this cache reads every pending notification before each lookup (one
non-blocking ``recv`` when nothing happened) and forgets whatever a notification may have
changed: an answer from the cache is as fresh as asking the kernel with RTM_GETLINK. If
notifications were lost (ENOBUFS: the socket's buffer overflowed) it forgets everything.

Aliases (where hycan records a link's owner): the kernel announces an alias change only
for a link that is up. The daemon's own changes update the cache directly; an alias an
admin writes by hand on a link that is down is seen from that link's next notification.

Altnames: a name is cached only when it is the link's own name. An altname is always
asked of the kernel, since the kernel does not announce altnames added to or removed from a
link that is down. For the same reason a name remembered as missing could have become an
altname of a down link since; the lookup then answers "missing" (the request fails with
"not found": it never acts on the wrong link) until the link's next notification, which
makes the cache forget every missing name.
"""

from __future__ import annotations

import errno
import socket
from typing import Literal

from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_NEWLINK

from hycan.backends._linkmsg import (
    IFINFOMSG,
    IFLA_IFALIAS,
    IFLA_IFNAME,
    IFLA_PROP_LIST,
    NLMSG_HEADER,
    attributes,
    string,
)
from hycan.backends.base import LinkRef

RTMGRP_LINK = 1  # the RTNLGRP_LINK group's bit in sockaddr_nl.nl_groups
_HEADERS = NLMSG_HEADER.size + IFINFOMSG.size
_NAME_ALIAS_AND_ALTNAMES = frozenset({IFLA_IFNAME, IFLA_IFALIAS, IFLA_PROP_LIST})
_NAME_AND_ALIAS = frozenset({IFLA_IFNAME, IFLA_IFALIAS})
_NAME = frozenset({IFLA_IFNAME})
_RECV_SIZE = 65536
_RCVBUF = 1 << 20  # room for bursts of notifications between two lookups
_MAX_NAMES = 1024  # names are client-chosen: bound what is remembered


def identity(data: bytes, start: int, end: int) -> tuple[str | None, str | None, bool]:
    """A link message's name, alias and whether it lists altnames, from its attributes
    (``data[start:end]``).

    Without walking all ~45 attributes of a notification (~15 µs; one comes with every
    toggle; docs/perf.md, L18-2 and L18-6): an attribute's type is the u16 at offset 2 of
    its 4-aligned header, so if no 4-aligned position from ``start`` holds the type of
    IFLA_PROP_LIST (with any flag bits), there are no altnames, and the walk stops at the
    name (the kernel writes it first) or, if a position may hold IFLA_IFALIAS, at the
    alias (written early; owned links have one). One byte scan each proves absence.
    """
    if _aligned(data, IFLA_PROP_LIST, start, end):
        wanted = _NAME_ALIAS_AND_ALTNAMES
    elif _aligned(data, IFLA_IFALIAS, start, end):
        wanted = _NAME_AND_ALIAS
    else:
        wanted = _NAME
    found = attributes(data, start, end, wanted)
    name = string(data, found[IFLA_IFNAME]) if IFLA_IFNAME in found else None
    alias = string(data, found[IFLA_IFALIAS]) if IFLA_IFALIAS in found else None
    return name, alias, IFLA_PROP_LIST in found


def _aligned(data: bytes, number: int, start: int, end: int) -> bool:
    """Whether a position 2 mod 4 from ``start`` holds attribute type ``number`` (< 256),
    whatever its flag bits: the low byte of the u16 is ``number``, the high byte's low 6
    bits are 0. One ``memchr`` scan per candidate byte (a 2-byte ``find`` is ~10x slower)."""
    needle = bytes((number,))
    at = data.find(needle, start, end - 1)
    while at != -1:
        if (at - start) % 4 == 2 and not data[at + 1] & 0x3F:
            return True
        at = data.find(needle, at + 1, end - 1)
    return False


class LinkKinds:
    """``name -> LinkRef`` (or known missing) for this network namespace, exact as of each
    lookup (but see the module's note on altnames)."""

    def __init__(self) -> None:
        self._links: dict[str, LinkRef] = {}  # own names of existing links
        self._missing: set[str] = set()  # names known not to exist
        self._names: dict[int, str] = {}  # ifindex -> name, for the links in _links
        self._created: dict[str, str] = {}  # name -> kind, while :meth:`created` reads
        self._sock = self._open()

    @staticmethod
    def _open() -> socket.socket:
        sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
            socket.NETLINK_ROUTE,
        )
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        sock.bind((0, RTMGRP_LINK))
        return sock

    def lookup(self, name: str) -> LinkRef | Literal[False] | None:
        """The link if known, False if ``name`` is known to be missing, None if the kernel
        must be asked."""
        self._drain()
        found = self._links.get(name)
        if found is not None:
            return found
        if name in self._missing:
            return False
        return None

    def remember(self, name: str, link: LinkRef | None) -> None:
        """Keep what RTM_GETLINK said for ``name`` (None: no such link); call it after
        :meth:`lookup` returned None. An altname's answer is not kept."""
        if len(self._links) + len(self._missing) >= _MAX_NAMES:
            self._forget_all()
        if link is None:
            self._missing.add(name)
        elif link.name == name:
            self._links[name] = link
            self._names[link.ifindex] = name

    def created(self, kinds: dict[str, str]) -> None:
        """Learn the links just created (``name -> kind``) from the kernel's announcements
        of them, queued before the create returned, instead of asking the kernel again
        with RTM_GETLINK (docs/perf.md, L18-5). The first RTM_NEWLINK of such a name
        read now is taken as the new link; a link of that name announced before it (one
        deleted or renamed since, for the create to succeed) is then undone by its own
        later announcement, as every entry is, and the name is asked of the kernel. After
        lost announcements nothing is learned."""
        self._created = kinds
        try:
            self._drain()
        finally:
            self._created = {}

    def close(self) -> None:
        """Close the notification socket."""
        self._sock.close()

    def _forget_all(self) -> None:
        self._links.clear()
        self._missing.clear()
        self._names.clear()
        # After lost notifications (ENOBUFS), what is read next is older than what was
        # lost, a created link's own announcement perhaps among it: learn nothing more.
        self._created = {}

    def _drain(self) -> None:
        while True:
            try:
                data = self._sock.recv(_RECV_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                self._forget_all()  # notifications were lost (ENOBUFS) or the socket broke
                if exc.errno != errno.ENOBUFS:
                    self._sock.close()
                    self._sock = self._open()
                    return
                continue
            self._apply(data)

    def _apply(self, data: bytes) -> None:
        offset = 0
        while offset + _HEADERS <= len(data):
            length, msg_type, _, _, _ = NLMSG_HEADER.unpack_from(data, offset)
            end = offset + length
            if length < _HEADERS or end > len(data):
                self._forget_all()  # malformed: trust nothing
                return
            if msg_type in (RTM_NEWLINK, RTM_DELLINK):
                _, _, index, _, _ = IFINFOMSG.unpack_from(data, offset + NLMSG_HEADER.size)
                name, alias, altnames = identity(data, offset + _HEADERS, end)
                if altnames:
                    self._missing.clear()  # a link with altnames: any of them may be new
                self._changed(msg_type, index, name, alias or None)
            offset += (length + 3) & ~3

    def _changed(self, msg_type: int, index: int, name: str | None, alias: str | None) -> None:
        known = self._names.get(index)
        if msg_type == RTM_NEWLINK and known is not None and known == name:
            cached = self._links.get(known)
            if cached is not None and cached.alias == alias:
                return  # the same link, name and owner: its state changed, not its kind
        if known is not None:
            del self._names[index]
            self._links.pop(known, None)
        if name is not None:
            self._links.pop(name, None)
            self._missing.discard(name)
            kind = self._created.pop(name, None)
            if kind is not None and msg_type == RTM_NEWLINK:
                self.remember(name, LinkRef(index, name, kind, alias))
