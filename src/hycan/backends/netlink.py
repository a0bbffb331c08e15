"""The real backend: rtnetlink through AF_NETLINK sockets kept open for the daemon's life.

Requests are sent on our own blocking socket instead of through pyroute2's asyncio-based
``IPRoute``: rtnetlink answers synchronously inside ``send()``, so a request costs one send
and one receive.
A name is resolved once into the link it means (:meth:`NetlinkBackend.resolve`, from the
notification-kept cache); changes then address that link by index, so they land on the
link the policy judged. No subprocess, no shell.

What keeps a request in the tens of microseconds (see docs/perf.md):

- Building an ``ifinfmsg`` with pyroute2 costs 25-60 µs, more than the kernel takes to
  act on it, and a create, up or delete of a new link is always a new request. Link
  requests are packed with ``struct`` (:mod:`~hycan.backends._linkreq`, byte for byte
  what pyroute2 builds, which a test checks); only CAN settings are built by pyroute2.
- Decoding a whole RTM_NEWLINK with ``ifinfmsg.decode()`` costs 200-700 µs (it decodes
  every statistic and per-family block). STATUS asks the kernel to leave out the
  statistics it can skip (``IFLA_EXT_MASK`` = ``RTEXT_FILTER_SKIP_STATS``) and reads only
  the attributes it reports, walking the attribute list with ``struct``; attribute numbers
  and the operstate names come from pyroute2's own tables (CAN links, rare and rich, are
  asked again with their statistics, for the frame counters, and decoded by pyroute2).
- The policy's question "which link is this name, of what kind?" is answered from
  :class:`~hycan.backends._linkkinds.LinkKinds`, kept exact by the kernel's link
  notifications, so UP/DOWN of a vcan (or a failing op on a missing name) needs no
  RTM_GETLINK after the first.
- Few system calls: the kernel answers inside ``send()``, so replies are read without
  waiting (``MSG_DONTWAIT``) and ``poll()`` (bounded by the timeout) is only used when one
  is not there yet; RTM_GETLINK asks for no separate ACK, the link message is the answer.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
from typing import Any

from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
)
from pyroute2.netlink.rtnl import (
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_GETLINK,
    RTM_GETNSID,
    RTM_GETROUTE,
    RTM_NEWLINK,
    RTM_NEWNSID,
    RTM_NEWROUTE,
)
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg
from pyroute2.netlink.rtnl.nsidmsg import nsidmsg

from hycan._canconfig import CanSettings
from hycan._netns import Netns
from hycan.backends import _cangw
from hycan.backends._canlink import can_restart_attrs, can_settings_attrs
from hycan.backends._linkkinds import LinkKinds
from hycan.backends._linkmsg import IFLA_IFALIAS, IFLA_MTU, NLMSG_HEADER, U32, parse_link
from hycan.backends._linkreq import (
    IFLA_EXT_MASK,
    IFLA_IF_NETNSID,
    IFLA_NET_NS_FD,
    link_request,
    str_attr,
    u32_attr,
)
from hycan.backends._monitor import NetlinkMonitor
from hycan.backends.base import LinkRef, LinkStatus, Route

_SEQ_OFFSET = 8  # of the sequence number inside the header
_NLMSG_ERRNO = struct.Struct("=i")
_RECV_SIZE = 65536
RTEXT_FILTER_SKIP_STATS = 1 << 3


class NetlinkBackend:
    """rtnetlink link operations on the network namespace the daemon was started in, or
    (``netns``, see :meth:`for_netns`) on another one, from the daemon's namespace.

    Another namespace is reached without entering it (that would need CAP_SYS_ADMIN):
    the namespace gets a netnsid in ours (RTM_NEWNSID, as ``ip netns set`` does), every
    request carries it as IFLA_TARGET_NETNSID, and a create carries the namespace's
    descriptor as IFLA_NET_NS_FD, so a vxcan's peer stays here. Such a backend keeps no
    name cache (no notifications come from there): each name is asked of the kernel.
    """

    def __init__(self, *, timeout: float = 5.0, netns: Netns | None = None) -> None:
        self._timeout = timeout
        self._seq = 0
        self._sock, self._poll = self._open()
        self._netns = netns
        self._nsid: int | None = None  # the IFLA_TARGET_NETNSID of every request but creates
        self._kinds: LinkKinds | None = None
        if netns is None:
            self._kinds = LinkKinds()
        else:
            try:
                self._nsid = self._netnsid(netns.fd)
            except BaseException:
                self._sock.close()
                raise

    def for_netns(self, netns: Netns) -> NetlinkBackend:
        """A backend acting in ``netns`` (its own netlink socket; close it when done)."""
        return NetlinkBackend(timeout=self._timeout, netns=netns)

    def _netnsid(self, fd: int) -> int:
        """The id of namespace ``fd`` in ours, assigned if it has none (two calls)."""
        assign = nsidmsg()
        assign["attrs"] = [("NETNSA_FD", fd), ("NETNSA_NSID", 0xFFFFFFFF)]  # -1: any free id
        code, _ = self._exchange(assign, RTM_NEWNSID, NLM_F_ACK)
        if code and code != errno.EEXIST:
            raise OSError(code, os.strerror(code), "netnsid")
        query = nsidmsg()
        query["attrs"] = [("NETNSA_FD", fd)]
        code, reply = self._exchange(query, RTM_GETNSID, 0, RTM_NEWNSID)
        if code or reply is None:
            raise OSError(code or errno.EPROTO, os.strerror(code or errno.EPROTO), "netnsid")
        answer = nsidmsg(reply)
        answer.decode()
        nsid = answer.get_attr("NETNSA_NSID")
        if nsid is None or nsid >= 0x80000000:
            raise OSError(errno.EPROTO, "the kernel gave the namespace no netnsid", "netnsid")
        return int(nsid)

    def _exchange(
        self, msg: Any, msg_type: int, nl_flags: int, reply_type: int | None = None
    ) -> tuple[int, bytes | None]:
        """Send a pyroute2 message built here; (errno or 0, the reply of ``reply_type``)."""
        seq = self._next_seq()
        msg["header"]["type"] = msg_type
        msg["header"]["flags"] = NLM_F_REQUEST | nl_flags
        msg["header"]["sequence_number"] = seq
        msg.encode()
        ack = reply_type is None
        return self._transact(bytes(msg.data), seq, ack=ack, reply_type=reply_type or RTM_NEWLINK)

    def _open(self) -> tuple[socket.socket, select.poll]:
        # Blocking (no socket timeout, which would poll() before every call): sends to the
        # kernel never wait, and receives use MSG_DONTWAIT with a bounded poll() fallback.
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        sock.bind((0, 0))
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return sock, poller

    def add_link(self, name: str, kind: str, peer: str | None = None, up: bool = False) -> None:
        """RTM_NEWLINK with NLM_F_CREATE|NLM_F_EXCL and IFLA_LINKINFO kind (a vxcan's
        ``peer`` in VXCAN_INFO_PEER, created in the daemon's namespace); ``up`` sets
        IFF_UP in the same message (the only way to bring up a link of another namespace
        from outside it: the kernel takes no IFLA_TARGET_NETNSID on a change)."""
        flags = IFF_UP if up else 0
        place = u32_attr(IFLA_NET_NS_FD, self._netns.fd) if self._netns is not None else b""
        frame = link_request(
            RTM_NEWLINK,
            NLM_F_CREATE | NLM_F_EXCL,
            name=name,
            flags=flags,
            change=flags,
            attrs=place,
            kind=kind,
            peer=peer,
        )
        self._request(frame, name)
        if self._kinds is not None:  # a vxcan's peer is here too
            self._kinds.created({name: kind} if peer is None else {name: kind, peer: kind})

    def resolve(self, name: str) -> LinkRef:
        """The link ``name`` means; ENODEV if none. Answered from :class:`LinkKinds`
        (kept current by link notifications) when it knows, else by RTM_GETLINK."""
        kinds = self._kinds
        known = kinds.lookup(name) if kinds is not None else None
        if known is None:
            status = self.status(name)
            link = None
            if status.exists and status.ifindex is not None:
                link = LinkRef(status.ifindex, status.name, status.kind, status.alias)
            if kinds is not None:
                kinds.remember(name, link)
            known = link or False
        if known is False:
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV), name)
        return known

    def set_alias(self, link: LinkRef, alias: str) -> None:
        """RTM_NEWLINK with IFLA_IFALIAS (the kernel takes no alias in the create itself).

        The kernel announces an alias change only for a link that is up, so the cache is
        told here (see LinkKinds on what that leaves out)."""
        self._request(self._change(link, attrs=str_attr(IFLA_IFALIAS, alias)), link.name)
        if self._kinds is not None:
            self._kinds.remember(link.name, link._replace(alias=alias or None))

    def links(self) -> list[LinkStatus]:
        """Every link of the namespace (an RTM_GETLINK dump, statistics skipped)."""
        found: list[bytes] = []
        mask = u32_attr(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
        dump = link_request(RTM_GETLINK, NLM_F_DUMP, attrs=self._where() + mask, ack=False)
        self._request(dump, "", dump=found)
        return [parse_link("", message) for message in found]

    def set_up(self, link: LinkRef, up: bool) -> None:
        """RTM_NEWLINK changing only IFF_UP."""
        self._request(self._change(link, flags=IFF_UP if up else 0, change=IFF_UP), link.name)

    def delete_link(self, link: LinkRef) -> None:
        """RTM_DELLINK."""
        self._request(self._change(link, msg_type=RTM_DELLINK), link.name)

    def set_mtu(self, link: LinkRef, mtu: int) -> None:
        """RTM_NEWLINK with IFLA_MTU."""
        self._request(self._change(link, attrs=u32_attr(IFLA_MTU, mtu)), link.name)

    def set_can(self, link: LinkRef, settings: CanSettings) -> None:
        """RTM_NEWLINK with kind "can" data, as ``ip link set NAME type can ...``."""
        self._request(self._pyroute2_change(link, can_settings_attrs(settings)), link.name)

    def restart_can(self, link: LinkRef) -> None:
        """RTM_NEWLINK with IFLA_CAN_RESTART, as ``ip link set NAME type can restart``."""
        self._request(self._pyroute2_change(link, can_restart_attrs()), link.name)

    def add_route(self, route: Route) -> None:
        """RTM_NEWROUTE of a CAN gateway job (``cangw -A``)."""
        self._route_request(RTM_NEWROUTE, route)

    def delete_route(self, route: Route) -> None:
        """RTM_DELROUTE of the job ``route`` describes (``cangw -D``)."""
        self._route_request(RTM_DELROUTE, route)

    def routes(self) -> list[Route]:
        """Every CAN->CAN job (an RTM_GETROUTE dump of family AF_CAN, ``cangw -L``)."""
        found: list[bytes] = []
        self._route_request(RTM_GETROUTE, None, found)
        return [route for route in map(_cangw.decode, found) if route is not None]

    def _route_request(
        self, msg_type: int, route: Route | None, dump: list[bytes] | None = None
    ) -> None:
        if self._netns is not None:
            raise OSError(errno.EOPNOTSUPP, "routes live in the daemon's namespace")
        seq = self._next_seq()
        frame = _cangw.encode(msg_type, route, seq)
        code, _ = self._transact(frame, seq, dump=dump, reply_type=RTM_NEWROUTE)
        if code:
            raise OSError(code, os.strerror(code), "route")

    def monitor(self) -> NetlinkMonitor:
        """A socket on the kernel's link announcements (RTNLGRP_LINK) of the daemon's
        namespace."""
        return NetlinkMonitor()

    def status(self, name: str) -> LinkStatus:
        """RTM_GETLINK by name, statistics skipped; ``exists=False`` on ENODEV. A CAN
        controller is asked again with them: its STATUS reports its frame counters."""
        status = self._getlink(name, RTEXT_FILTER_SKIP_STATS)
        return self._getlink(name, 0) if status.kind == "can" else status

    def _getlink(self, name: str, ext_mask: int) -> LinkStatus:
        try:
            mask = u32_attr(IFLA_EXT_MASK, ext_mask)
            query = link_request(RTM_GETLINK, 0, name=name, attrs=self._where() + mask, ack=False)
            reply = self._request(query, name)
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return LinkStatus(name, exists=False)
            raise
        if reply is None:
            raise OSError(errno.EPROTO, "the kernel acknowledged RTM_GETLINK without a link")
        return parse_link(name, reply)

    def close(self) -> None:
        """Close the netlink sockets."""
        self._sock.close()
        if self._kinds is not None:
            self._kinds.close()

    def _where(self) -> bytes:
        """The IFLA_TARGET_NETNSID a request (but a create) carries for another namespace."""
        return b"" if self._nsid is None else u32_attr(IFLA_IF_NETNSID, self._nsid)

    def _change(
        self,
        link: LinkRef,
        *,
        msg_type: int = RTM_NEWLINK,
        flags: int = 0,
        change: int = 0,
        attrs: bytes = b"",
    ) -> bytearray:
        """A request acting on ``link``, addressed by its index."""
        return link_request(
            msg_type, 0, index=link.ifindex, flags=flags, change=change, attrs=attrs + self._where()
        )

    def _pyroute2_change(self, link: LinkRef, attrs: list[Any]) -> bytearray:
        """RTM_NEWLINK of ``link`` with ``attrs`` encoded by pyroute2 (CAN settings)."""
        msg = ifinfmsg()
        msg["index"] = link.ifindex
        nsid = [] if self._nsid is None else [("IFLA_IF_NETNSID", self._nsid)]
        msg["attrs"] = attrs + nsid
        msg["header"]["type"] = RTM_NEWLINK
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
        msg.encode()
        return bytearray(msg.data)

    def _request(
        self, frame: bytearray, name: str, *, dump: list[bytes] | None = None
    ) -> bytes | None:
        """Send one request ``frame`` (its sequence number patched in); return None (a
        frame asking for an ACK) or the RTM_NEWLINK reply (a GET), or with ``dump``
        collect every RTM_NEWLINK of a dump into it; errors -> OSError naming ``name``
        (TimeoutError when the kernel does not answer in time)."""
        seq = self._next_seq()
        U32.pack_into(frame, _SEQ_OFFSET, seq)
        ack = bool(NLMSG_HEADER.unpack_from(frame)[2] & NLM_F_ACK)
        code, reply = self._transact(frame, seq, ack=ack, dump=dump)
        if code:
            raise OSError(code, os.strerror(code), name)
        return reply

    def _next_seq(self) -> int:
        self._seq = self._seq % 0x7FFFFFFF + 1
        return self._seq

    def _transact(
        self,
        frame: bytes | bytearray,
        seq: int,
        *,
        ack: bool = True,
        dump: list[bytes] | None = None,
        reply_type: int = RTM_NEWLINK,
    ) -> tuple[int, bytes | None]:
        """Send ``frame`` (sequence number ``seq``) and read its answer (see _receive)."""
        try:
            self._sock.send(frame)
            return self._receive(seq, ack, dump, reply_type=reply_type)
        except OSError:
            # The socket itself failed (ENOBUFS, timeout, ...), or a dump was cut short
            # with messages left behind: use a fresh one next time.
            self._reopen()
            raise

    def _receive(
        self,
        seq: int,
        ack: bool,
        dump: list[bytes] | None = None,
        *,
        reply_type: int = RTM_NEWLINK,
    ) -> tuple[int, bytes | None]:
        """Read until the answer to ``seq``: its ACK/error, or (``ack=False``) the
        ``reply_type`` message itself, or (``dump``) every such message up to NLMSG_DONE,
        appended to ``dump``. Return (errno or 0, the message's bytes or None)."""
        reply = None
        while True:
            data = self._recv()
            offset = 0
            while offset + NLMSG_HEADER.size <= len(data):
                length, msg_type, _flags, msg_seq, _port = NLMSG_HEADER.unpack_from(data, offset)
                if length < NLMSG_HEADER.size:
                    raise OSError(errno.EPROTO, "malformed netlink message from the kernel")
                if msg_seq == seq:
                    if msg_type == NLMSG_ERROR:
                        (code,) = _NLMSG_ERRNO.unpack_from(data, offset + NLMSG_HEADER.size)
                        return -code, reply
                    if msg_type == NLMSG_DONE:
                        return 0, reply
                    if msg_type == reply_type:
                        reply = data[offset : offset + length]
                        if dump is not None:
                            dump.append(reply)
                        elif not ack:
                            return 0, reply
                offset += (length + 3) & ~3

    def _recv(self) -> bytes:
        """One datagram: at once if it is there (the usual case), else within the timeout."""
        try:
            return self._sock.recv(_RECV_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass
        if not self._poll.poll(self._timeout * 1000):
            raise TimeoutError("timed out")
        return self._sock.recv(_RECV_SIZE, socket.MSG_DONTWAIT)

    def _reopen(self) -> None:
        try:
            self._sock.close()
        finally:
            self._sock, self._poll = self._open()
