"""Client API: a daemon connection and a per-link handle.

This file is the single source of the client: ``scripts/unasync.py`` generates
``hycan/_sync/client.py`` from it (``async``/``await`` removed, ``Async`` prefixes dropped).
Lines marked ``# sync-only:`` become code in the sync version; blocks between
``# async-only: begin`` and ``# async-only: end`` are left out of it.
"""

from __future__ import annotations

import os
import struct
from types import TracebackType
from typing import Any, Self

from hycan._async.transport import AsyncLocalTransport, AsyncSocketTransport, clock
from hycan._async.watch import AsyncWatch
from hycan._names import encode_name
from hycan._netns import identity_of, open_netns
from hycan._paths import client_socket
from hycan._protocol import Op, Response, encode_request
from hycan._status import COMPACT as _COMPACT
from hycan._status import LinkEntry, LinkStatus, RouteEntry, parse_list, parse_routes, ping_info
from hycan._transport_common import ConnectionLost, fallback_wanted, local_handler
from hycan.errors import DaemonUnavailable, LeaseLost, ProtocolError, error_for_code

DEFAULT_TIMEOUT = 5.0
NetnsArg = int | str | None
"""A network namespace: an open descriptor of it, a path (``/proc/PID/ns/net``,
``/run/netns/NAME``), or None for the daemon's own."""
_NETNS_FRAME = encode_request(Op.NETNS, b"", b"")


class AsyncDaemonClient:
    """A persistent connection to ``hycan-daemon``.

    ``socket_path`` overrides the socket choice (``$HYCAN_DAEMON_SOCKET``, then
    ``/var/run/hycan_daemon.sock`` if present, then ``/tmp/hycan_daemon.sock``). Every call
    must finish within ``timeout`` seconds, connecting and the one transparent reconnect
    included. The server must run as root, as this user, as the ``hycan`` service user or as
    ``daemon_uid`` (default: ``$HYCAN_DAEMON_UID``, ignored in a privileged process). When no
    daemon answers and this process holds CAP_NET_ADMIN, calls run in-process instead,
    unless ``fallback=False``, ``HYCAN_NO_FALLBACK=1``, or a socket path was named
    explicitly.
    """

    def __init__(
        self,
        socket_path: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        fallback: bool | None = None,
        daemon_uid: int | None = None,
    ) -> None:
        choice = client_socket(socket_path)
        self._timeout = timeout
        self._fallback = fallback_wanted(choice.explicit, fallback)
        # async-only: begin
        self._socket = AsyncSocketTransport(choice.path, choice.tried, daemon_uid)
        # async-only: end
        # sync-only: self._socket = SocketTransport(choice.path, choice.tried, daemon_uid, timeout)
        self._transport: AsyncSocketTransport | AsyncLocalTransport = self._socket
        self._leases: list[str] = []  # links this connection leases, oldest first
        # Where the daemon's session acts: (connection generation, namespace identity).
        self._netns: tuple[int, tuple[int, int] | None] = (0, None)

    @property
    def timeout(self) -> float:
        """Seconds each call may take."""
        return self._timeout

    @property
    def socket_path(self) -> str:
        """The socket in use, or ``"in-process"`` for the fallback."""
        return self._transport.path

    async def connect(self) -> None:
        """Connect now (calls connect lazily anyway); falls back in-process if allowed."""
        if not self._transport.connected:
            await self._connect(clock() + self._timeout)

    async def _connect(self, deadline: float) -> None:
        try:
            await self._transport.connect(deadline)
        except DaemonUnavailable:
            handler = local_handler() if self._fallback else None
            if handler is None:
                raise
            self._transport = AsyncLocalTransport(handler)

    @property
    def leases(self) -> tuple[str, ...]:
        """The links this connection leases (deleted by the daemon when it closes)."""
        return tuple(self._leases)

    async def request(
        self, op: int, name: str = "", payload: bytes = b"", *, netns: NetnsArg = None
    ) -> Response:
        """Send one request and return its success response; failures raise ``HycanError``.
        ``netns``: the network namespace it acts in (None: the daemon's).

        A connection that held leases is never replaced silently: once it is gone (the
        daemon restarted, a call timed out), the next call raises :class:`LeaseLost`,
        since the daemon deleted those links with it.
        """
        frame = encode_request(op, encode_name(name) if name else b"", payload)
        deadline = clock() + self._timeout
        if not self._transport.connected:
            self._check_leases()
            await self._connect(deadline)
        try:
            response = await self._call(frame, deadline, netns)
        except ConnectionLost:
            # The daemon restarted since our last call: one transparent reconnect, in the
            # time this call has left (unless leases went with the old connection).
            self._check_leases()
            if not self._transport.connected:
                await self._connect(deadline)
            response = await self._call(frame, deadline, netns)
        if not response.success:
            raise error_for_code(response.code, response.message)
        return response

    async def _call(self, frame: bytes, deadline: float, netns: NetnsArg) -> Response:
        """One request, after telling the daemon where it acts if that changed (NETNS,
        with the namespace's descriptor: once per namespace switch, not per call)."""
        transport = self._transport
        identity = identity_of(netns) if netns is not None else None
        if self._netns != (transport.generation, identity) and (
            identity is not None or self._netns[1] is not None
        ):
            fd, close = open_netns(netns) if netns is not None else (None, False)
            try:
                entered = await transport.roundtrip(_NETNS_FRAME, deadline, fd)
            finally:
                if close and fd is not None:
                    os.close(fd)
            if not entered.success:
                raise error_for_code(entered.code, entered.message)
            self._netns = (transport.generation, identity)
        return await transport.roundtrip(frame, deadline)

    def _check_leases(self) -> None:
        if self._leases:
            names, self._leases = ", ".join(self._leases), []
            raise LeaseLost(
                f"the connection to hycan-daemon that leased {names} closed (the daemon "
                "restarted, or a call on it timed out): the daemon deleted them with it; "
                "create them again"
            )

    async def create(self, name: str) -> str:
        """Create vcan ``name`` (a no-op if that vcan exists); returns the daemon's message."""
        return (await self.request(Op.CREATE_VCAN, name)).message

    async def create_vcan(
        self, name: str, *, lease: bool = False, netns: NetnsArg = None, up: bool = False
    ) -> str:
        """Create vcan ``name``, owned by this user. With ``lease=True`` it must be new and
        the daemon deletes it when this connection closes, however that happens (``close``,
        exit, crash, SIGKILL); without, an existing vcan is left as it is. ``netns``: the
        network namespace to create it in; ``up``: bring it up in the same kernel call
        (the only way to bring up a link of another namespace from outside it)."""
        if not (lease or up or netns is not None):
            return await self.create(name)
        options = {"kind": "vcan", "lease": lease, "up": up}
        return await self._create_link(name, options, netns)

    async def create_vxcan(
        self,
        name: str,
        *,
        peer: str,
        netns: NetnsArg = None,
        lease: bool = False,
        up: bool = True,
    ) -> str:
        """Create a vxcan pair: ``name`` in ``netns`` (a sandbox's or container's network
        namespace) and ``peer`` in the daemon's, both owned by this user; a frame sent on
        one end arrives on the other. ``up`` brings both up; ``lease`` deletes the pair
        when this connection closes. Route ``peer`` to a host link with :meth:`add_route`."""
        options = {"kind": "vxcan", "lease": lease, "up": up, "peer": peer}
        message = await self._create_link(name, options, netns)
        if up:
            await self.up(peer)
        return message

    async def _create_link(self, name: str, options: dict[str, Any], netns: NetnsArg) -> str:
        payload = _COMPACT.encode(options).encode()
        message = (await self.request(Op.CREATE_LINK, name, payload, netns=netns)).message
        if options["lease"] and name not in self._leases:
            self._leases.append(name)
        return message

    async def add_route(
        self,
        src: str,
        dst: str,
        *,
        both: bool = False,
        can_id: int | None = None,
        mask: int | None = None,
        fd: bool = False,
        lease: bool = False,
    ) -> str:
        """Route CAN frames received on link ``src`` to ``dst`` (both in the daemon's
        namespace; one must be yours, e.g. your vxcan's peer) through the kernel's CAN
        gateway; ``both``: and back. ``can_id``/``mask`` pass only matching IDs (``mask``
        defaults to exactly ``can_id``); ``fd`` routes CAN FD frames instead of classic
        ones; ``lease``: the route goes when this connection closes."""
        return await self._route("add", src, dst, both, can_id, mask, fd, lease)

    async def remove_route(
        self,
        src: str,
        dst: str,
        *,
        both: bool = False,
        can_id: int | None = None,
        mask: int | None = None,
        fd: bool = False,
    ) -> str:
        """Delete the route(s) :meth:`add_route` made with the same arguments."""
        return await self._route("del", src, dst, both, can_id, mask, fd, False)

    async def _route(
        self,
        action: str,
        src: str,
        dst: str,
        both: bool,
        can_id: int | None,
        mask: int | None,
        fd: bool,
        lease: bool,
    ) -> str:
        options = {"action": action, "dst": dst, "both": both, "fd": fd, "lease": lease}
        if can_id is not None:
            options.update(can_id=can_id, mask=mask)
        payload = _COMPACT.encode(options).encode()
        return (await self.request(Op.ROUTE, src, payload)).message

    async def routes(self) -> list[RouteEntry]:
        """The CAN gateway routes that touch one of your links (an admin: all)."""
        return parse_routes((await self.request(Op.ROUTES)).message)

    async def list_links(self, *, netns: NetnsArg = None) -> list[LinkEntry]:
        """The links this user may act on (an admin: all), with owner and lease, in
        ``netns`` (None: the daemon's network namespace)."""
        entries: list[LinkEntry] = []
        after = 0
        while True:
            payload = _COMPACT.encode({"after": after}).encode()
            reply = await self.request(Op.LIST, "", payload, netns=netns)
            page, following = parse_list(reply.message)
            entries += page
            if following is None:
                return entries
            if following <= after:
                raise ProtocolError("the daemon's LIST reply does not move forward")
            after = following

    async def up(self, name: str) -> str:
        """Bring link ``name`` up."""
        return (await self.request(Op.INTERFACE_UP, name)).message

    async def down(self, name: str) -> str:
        """Bring link ``name`` down."""
        return (await self.request(Op.INTERFACE_DOWN, name)).message

    async def delete(self, name: str, *, netns: NetnsArg = None) -> str:
        """Delete vcan or vxcan ``name`` (of ``netns``; other kinds are never deleted)."""
        message = (await self.request(Op.DELETE, name, netns=netns)).message
        if name in self._leases:
            self._leases.remove(name)
        return message

    async def status(self, name: str, *, netns: NetnsArg = None) -> LinkStatus:
        """Describe link ``name`` of ``netns`` (``exists=False`` if there is none)."""
        return LinkStatus.from_json((await self.request(Op.STATUS, name, netns=netns)).message)

    async def set_mtu(self, name: str, mtu: int) -> str:
        """Set the MTU: 16 (classic CAN) or 72 (CAN FD) for a vcan, which must be down."""
        return (await self.request(Op.SET_MTU, name, struct.pack("<I", mtu))).message

    async def set_can(self, name: str, **settings: Any) -> str:
        """Configure a real CAN controller, as ``ip link set NAME type can ...`` does: bit
        timing (``bitrate=``, ``sample_point=``, or ``tq=``, ``prop_seg=``, ``phase_seg1=``,
        ``phase_seg2=``; ``sjw=``), the CAN FD data phase (the same names with ``data_``,
        together with ``fd=True``), modes (``listen_only=True``, ``loopback=False``, ...),
        TDC (``tdc_mode=``, ``tdcv=``, ``tdco=``, ``tdcf=``), ``termination=`` (ohms) and
        ``restart_ms=``. Keywords left out stay unchanged; timing and modes need the link
        down. The names are :class:`hycan.CanSettings`' fields (docs/can.md); anything
        invalid raises :class:`InvalidArgument` before it is sent."""
        from hycan._canconfig import CanSettings  # validation; kept off `import hycan`

        payload = CanSettings.from_dict(settings).to_payload()
        return (await self.request(Op.SET_CAN, name, payload)).message

    async def set_bitrate(self, name: str, bitrate: int | None = None, **settings: Any) -> str:
        """Shorthand for :meth:`set_can` with the nominal ``bitrate`` first."""
        if bitrate is not None:
            settings["bitrate"] = bitrate
        return await self.set_can(name, **settings)

    async def restart(self, name: str) -> str:
        """Restart a CAN controller that is in bus-off state."""
        return (await self.request(Op.CAN_RESTART, name)).message

    def watch(self, *names: str) -> AsyncWatch:
        """The link events of ``names`` (none: every link of the daemon's namespace):
        added, removed, up, down, carrier, renamed and CAN state changes, as
        :class:`hycan.LinkEvent`. On a connection of its own (this client stays free for
        calls); starts on entering ``with`` or on the first event. Needs hycan-daemon
        (there is no in-process watch)."""
        return AsyncWatch(self._socket.sibling(), names, self._timeout)

    async def ping(self) -> dict[str, Any]:
        """The daemon's ``protocol`` version, package ``version`` and ``backend``."""
        return ping_info((await self.request(Op.PING)).message)

    async def aclose(self) -> None:
        """Close the connection."""
        await self._transport.aclose()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncNetlink:
    """One link, driven through the daemon: the Python face of the C++ ``Netlink`` class.

    ``await AsyncNetlink.open(name)`` creates vcan ``name`` first (``create=False`` for real
    links such as ``can0``); then ``up()``, ``down()``, ``delete()``, ``status()``. With
    ``lease=True`` the vcan must be new and is deleted when this object's connection
    closes (``aclose()``, or the process ending in any way).
    """

    def __init__(
        self,
        name: str,
        *,
        create: bool = True,
        lease: bool = False,
        client: AsyncDaemonClient | None = None,
        socket_path: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        fallback: bool | None = None,
        daemon_uid: int | None = None,
    ) -> None:
        self.name = name
        self._create = create
        self._lease = lease
        self._owns_client = client is None
        self.client = client or AsyncDaemonClient(
            socket_path, timeout=timeout, fallback=fallback, daemon_uid=daemon_uid
        )
        # sync-only: self._setup()

    # async-only: begin
    @classmethod
    async def open(
        cls,
        name: str,
        *,
        create: bool = True,
        lease: bool = False,
        client: AsyncDaemonClient | None = None,
        socket_path: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        fallback: bool | None = None,
        daemon_uid: int | None = None,
    ) -> Self:
        """Connect (and create the vcan unless ``create=False``); the trio constructor."""
        net = cls(
            name,
            create=create,
            lease=lease,
            client=client,
            socket_path=socket_path,
            timeout=timeout,
            fallback=fallback,
            daemon_uid=daemon_uid,
        )
        await net._setup()
        return net

    # async-only: end
    async def _setup(self) -> None:
        try:
            await self.client.connect()
            if self._create:
                await self.client.create_vcan(self.name, lease=self._lease)
        except BaseException:
            await self.aclose()
            raise

    async def up(self) -> str:
        """Bring the link up."""
        return await self.client.up(self.name)

    async def down(self) -> str:
        """Bring the link down."""
        return await self.client.down(self.name)

    async def delete(self) -> str:
        """Delete the vcan."""
        return await self.client.delete(self.name)

    async def status(self) -> LinkStatus:
        """Describe the link."""
        return await self.client.status(self.name)

    async def set_mtu(self, mtu: int) -> str:
        """Set the MTU (a vcan: 16 classic CAN or 72 CAN FD, while down)."""
        return await self.client.set_mtu(self.name, mtu)

    async def set_can(self, **settings: Any) -> str:
        """Configure this CAN controller; see ``DaemonClient.set_can`` for the settings."""
        return await self.client.set_can(self.name, **settings)

    async def set_bitrate(self, bitrate: int | None = None, **settings: Any) -> str:
        """Shorthand for :meth:`set_can` with the nominal ``bitrate`` first."""
        return await self.client.set_bitrate(self.name, bitrate, **settings)

    async def restart(self) -> str:
        """Restart the CAN controller after bus-off."""
        return await self.client.restart(self.name)

    async def aclose(self) -> None:
        """Close the connection if this object opened it."""
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
