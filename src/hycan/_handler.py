"""Request -> Response: the semantics of every op on top of a :class:`Backend`.

Shared by the daemon and the in-process fallback, so both answer identically. Pure and
synchronous: no sockets, no trio. Kernel errno values become hycan errors here, with
messages a person can act on.
"""

from __future__ import annotations

import errno
import json
import os
import struct
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from hycan import __version__
from hycan._advice import module_missing
from hycan._canconfig import CanSettings
from hycan._events import POLL_INTERVAL, QUEUE_CAPACITY, watch_names
from hycan._netns import Netns, NotANetns, Where, classify
from hycan._owner import Owner, holder_alive, owner_of, this_process
from hycan._payloads import create_options, list_after, no_payload, route_options
from hycan._peercred import PeerCredentials
from hycan._protocol import PROTOCOL_VERSION, Op, Request, Response, failure, ok
from hycan._status import COMPACT as _COMPACT
from hycan.backends.base import Backend, LinkRef, Route
from hycan.daemon.policy import VERB_OF_OP, Policy, Rules, Verb
from hycan.errors import (
    AlreadyExists,
    DaemonBusy,
    ErrorCode,
    HycanError,
    InterfaceNotFound,
    InvalidArgument,
    LinkBusy,
    NotSupported,
    OperationFailed,
    PermissionDenied,
    Timeout,
)

# What failed, per op, and the C++-compatible code for a kernel refusal we can't classify.
_FAILURE = {
    Op.CREATE_VCAN: ("creating vcan", ErrorCode.RTNL_LINK_ADD),
    Op.INTERFACE_UP: ("bringing up", ErrorCode.BRING_UP),
    Op.INTERFACE_DOWN: ("bringing down", ErrorCode.BRING_DOWN),
    Op.DELETE: ("deleting", ErrorCode.DELETE_FAILED),
    Op.STATUS: ("reading the status of", ErrorCode.INTERNAL),
    Op.SET_MTU: ("setting the MTU of", ErrorCode.RTNL_LINK_ADD),
    Op.SET_CAN: ("setting CAN bit timing of", ErrorCode.RTNL_LINK_ADD),
    Op.CAN_RESTART: ("restarting", ErrorCode.RTNL_LINK_ADD),
    Op.CREATE_LINK: ("creating", ErrorCode.RTNL_LINK_ADD),
    Op.LIST: ("listing links", ErrorCode.INTERNAL),
    Op.NETNS: ("entering the network namespace for", ErrorCode.INTERNAL),
    Op.ROUTE: ("routing from", ErrorCode.RTNL_LINK_ADD),
    Op.ROUTES: ("listing routes", ErrorCode.INTERNAL),
    Op.WATCH: ("watching links", ErrorCode.INTERNAL),
}
# What the kernel cannot do to a link of another namespace from outside it (it takes no
# IFLA_TARGET_NETNSID on a change; entering would need CAP_SYS_ADMIN).
_CHANGES = frozenset({Op.INTERFACE_UP, Op.INTERFACE_DOWN, Op.SET_MTU, Op.SET_CAN, Op.CAN_RESTART})
MAX_NAMESPACES = 8  # network namespaces one connection may enter
_LIST_PAGE = 60_000  # bytes of LIST entries per reply (a reply holds at most 65535)
_MTU = struct.Struct("<I")


class Answer(NamedTuple):
    """A response, and the kernel's name of the link acted on when the request called it
    by another name (an altname), for the audit trail."""

    response: Response
    link: str | None = None


class Place(NamedTuple):
    """A network namespace a connection entered, and the backend that acts in it."""

    netns: Netns
    backend: Backend


class Session:
    """One client connection as the handler sees it: who asks (the peer's credentials
    from the kernel), where its requests act (``place``: a network namespace it passed,
    None for the daemon's), and what it leases, which goes when it ends: links by
    (namespace inode, 0 for the daemon's; ifindex), and CAN gateway routes."""

    __slots__ = ("leases", "peer", "pending_fd", "place", "places", "routes", "watch")

    def __init__(self, peer: PeerCredentials) -> None:
        self.peer = peer
        self.leases: dict[tuple[int, int], LinkRef] = {}
        self.routes: list[Route] = []
        self.place: Place | None = None
        self.places: dict[int, Place] = {}  # by namespace inode: every one entered
        self.pending_fd: int | None = None  # received with the bytes, for the next NETNS
        # After a WATCH: the names watched (an empty set: every link); the connection now
        # carries events only (the server's business).
        self.watch: frozenset[str] | None = None

    @property
    def holds(self) -> bool:
        """Whether closing this connection deletes something (links or routes)."""
        return bool(self.leases or self.routes)

    def receive_fd(self, fd: int) -> None:
        """Keep a descriptor the client sent (SCM_RIGHTS) for its NETNS request; one
        waiting descriptor at most, the older one is closed."""
        self.drop_fd()
        self.pending_fd = fd

    def drop_fd(self) -> None:
        """Close a received descriptor no NETNS request took."""
        fd, self.pending_fd = self.pending_fd, None
        if fd is not None:
            os.close(fd)


class _Call:
    """One request being performed; remembers the link its name resolved to, and where."""

    __slots__ = ("backend", "key", "link", "request", "session", "where")

    def __init__(self, request: Request, session: Session, backend: Backend) -> None:
        self.request = request
        self.session = session
        self.link: LinkRef | None = None
        place = session.place
        self.backend = place.backend if place is not None else backend
        self.key = place.netns.inode if place is not None else 0
        self.where = place.netns.where if place is not None else Where.HOST


_OpFunction = Callable[["Handler", _Call], str]


class Handler:
    """Executes requests against a backend; ``answer()`` never raises for bad requests.

    Each op is one function (the table ``_OPS``). Ops that act on a link resolve the name
    into the link the kernel means first (an altname included: index, own name, kind and
    owner), ask the :class:`~hycan.daemon.policy.Policy` once about that link, and then
    act on it by index, so the change lands on the link that was judged. Every decision is
    the policy's; the handler records owners (:mod:`hycan._owner`), counts them for the
    quota and keeps each session's leases.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        policy: Policy | None = None,
        backend_name: str = "netlink",
        lease_holder: str | None = None,
        classify_netns: Callable[[int, int], Netns] = classify,
    ) -> None:
        self.backend = backend
        self.backend_name = backend_name
        self.policy = policy or Policy(Rules.defaults())  # the daemon's, without flags
        self.lease_holder = lease_holder or this_process()
        self.classify_netns = classify_netns
        self._owned: dict[int, int] | None = None  # ifindex -> owner uid, once counted
        # Leased links in "other" namespaces, which take no alias: (inode, ifindex) -> uid.
        self._foreign: dict[tuple[int, int], int] = {}
        self._ping = json.dumps(
            {"protocol": PROTOCOL_VERSION, "version": __version__, "backend": backend_name}
        )

    def answer(self, request: Request, session: Session) -> Answer:
        """Perform ``request`` for ``session``: its response, and which link it acted on."""
        call = _Call(request, session, self.backend)
        try:
            response = ok(_OPS[request.op](self, call))
        except HycanError as exc:
            response = failure(exc.code or ErrorCode.INTERNAL, exc.message)
        except OSError as exc:
            error = kernel_error(request.op, request.ifname, exc)
            response = failure(error.code or ErrorCode.INTERNAL, error.message)
        link = call.link
        if link is None or link.name == request.ifname:
            return Answer(response)
        return Answer(response, link.name)

    def release(self, session: Session) -> list[tuple[str, str | None]]:
        """End ``session`` (its connection ended): delete every route and link it leases
        and close the namespaces it entered. (name, None) for each link or route deleted
        or already gone, (name, reason) for one the kernel kept."""
        done: list[tuple[str, str | None]] = []
        routes, session.routes = session.routes, []
        if routes:
            names = {s.ifindex: s.name for s in self.backend.links()}
            for route in routes:
                shown = f"{names.get(route.src, route.src)}->{names.get(route.dst, route.dst)}"
                done.append((shown, self._delete_route_quietly(route)))
        leases, session.leases = session.leases, {}
        try:
            for (key, _), link in leases.items():
                place = session.places.get(key)
                backend = place.backend if place is not None else self.backend
                done.append((link.name, self._delete_quietly(link, backend, key)))
        finally:
            session.drop_fd()
            places, session.places, session.place = session.places, {}, None
            for place in places.values():
                place.backend.close()
                os.close(place.netns.fd)
        return done

    def release_orphans(self) -> list[tuple[str, str | None]]:
        """Delete the leased links whose holder (an earlier hycan-daemon process) is gone:
        (name, None) for each one deleted, (name, reason) for one the kernel kept."""
        done: list[tuple[str, str | None]] = []
        for status in self.backend.links():
            owner = owner_of(status.alias)
            if owner is None or owner.lease is None or owner.lease == self.lease_holder:
                continue
            if holder_alive(owner.lease) or status.ifindex is None:
                continue
            link = LinkRef(status.ifindex, status.name, status.kind, status.alias)
            done.append((status.name, self._delete_quietly(link)))
        return done

    def _delete_quietly(
        self, link: LinkRef, backend: Backend | None = None, key: int = 0
    ) -> str | None:
        try:
            (backend or self.backend).delete_link(link)
        except OSError as exc:
            if exc.errno != errno.ENODEV:
                return exc.strerror or str(exc)
        self._forget(key, link.ifindex)
        return None

    def _delete_route_quietly(self, route: Route) -> str | None:
        try:
            self.backend.delete_route(route)
        except OSError as exc:
            # The kernel removes a route with either of its links (ENODEV / no such job).
            if exc.errno not in (errno.ENODEV, errno.EINVAL, errno.ENOENT):
                return exc.strerror or str(exc)
        return None

    def _resolve(self, call: _Call) -> LinkRef:
        """The link the request's name means where the call acts (remembered for the
        audit trail). In an "other" namespace, a link this daemon leased there carries
        its owner from the daemon's memory (the kernel takes no alias there)."""
        link = call.link = call.backend.resolve(call.request.ifname)
        uid = self._foreign.get((call.key, link.ifindex)) if call.key else None
        if uid is not None:
            link = call.link = link._replace(alias=Owner(uid, self.lease_holder).alias())
        return link

    def _target(self, call: _Call) -> LinkRef:
        """The link the request's name means, once the policy allows the op on it."""
        link = self._resolve(call)
        op = call.request.op
        refusal = self.policy.refusal(call.session.peer, VERB_OF_OP[op], link, call.where)
        if refusal is not None:
            raise PermissionDenied(refusal)
        if call.key and op in _CHANGES:
            hint = (
                f"you hold CAP_NET_ADMIN in it: change {link.name} yourself (`ip link set "
                f"{link.name} ...` inside), or"
                if call.where is Where.OWN
                else "instead,"
            )
            raise NotSupported(
                f"not supported: {link.name} is in another network namespace, and the "
                f"kernel changes a link only from inside its namespace, which "
                f"hycan-daemon (CAP_NET_ADMIN only) cannot enter; {hint} create it "
                "already up (`up` on create) or delete and create it again"
            )
        return link

    def _ping_op(self, call: _Call) -> str:
        return self._ping

    def _create_vcan(self, call: _Call) -> str:
        return self._create(call, "vcan", lease=False)

    def _create_link(self, call: _Call) -> str:
        kind, lease, peer, up = create_options(call.request.payload)
        return self._create(call, kind, lease=lease, peer=peer, up=up)

    def _create(
        self, call: _Call, kind: str, *, lease: bool, peer: str | None = None, up: bool = False
    ) -> str:
        name = call.request.ifname
        creds = call.session.peer
        if (peer is not None) != (kind == "vxcan"):
            raise InvalidArgument(
                'a vxcan needs "peer", the name of its other end in the daemon\'s network '
                "namespace (and only a vxcan has one)"
            )
        decision = self.policy.decide(creds, Verb.CREATE, LinkRef(0, name, kind), call.where)
        if decision.refusal is not None:
            raise PermissionDenied(decision.refusal)
        if peer is not None:
            refusal = self.policy.refusal(creds, Verb.CREATE, LinkRef(0, peer, kind))
            if refusal is not None:
                raise PermissionDenied(refusal)
        foreign = call.where is Where.OTHER and peer is None  # no alias there: lease it
        if foreign and not lease and not self.policy.is_admin(creds):
            raise InvalidArgument(
                f"refusing to create {name}: in a network namespace you do not own, hycan "
                "cannot record that it is yours, so it must be leased (it goes when this "
                "connection closes): create it with lease"
            )
        counted = call.where is not Where.OWN or peer is not None
        quota = self.policy.max_links(creds, decision) if counted else None
        if quota is not None and (have := self._owned_by(creds.uid, quota)) >= quota:
            if call.backend.status(name).exists:  # asking for an existing one is no new link
                return self._exists(call, kind, lease=lease)
            raise DaemonBusy(
                f"refusing to create {name}: {self.policy.database.describe(creds.uid)} "
                f"already owns {have} links and may own at most {quota} (the daemon's link "
                "quota: --max-links-per-uid or the policy's max_links); delete some first "
                "(`hycan list` shows them)"
            )
        try:
            call.backend.add_link(name, kind, peer=peer, up=up)
        except OSError as exc:
            if exc.errno == errno.EOPNOTSUPP and kind in ("vcan", "vxcan"):
                raise NotSupported(module_missing(kind)) from None
            if not isinstance(exc, FileExistsError):
                raise
            if peer is not None and call.backend.status(name).exists is False:
                raise AlreadyExists(
                    f"{peer} already exists in the daemon's network namespace: pick another "
                    "peer name"
                ) from None
            return self._exists(call, kind, lease=lease)
        owner = Owner(creds.uid, self.lease_holder if lease else None)
        link = call.link = self._record(call, name, owner, remember=foreign and lease)
        held = [(call.key, link)]
        if peer is not None:
            held.append((0, self._record_peer(call, link, peer, owner)))
        if lease:
            call.session.leases.update(((key, ref.ifindex), ref) for key, ref in held)
        ends = f"{name} and its peer {peer}" if peer is not None else name
        state = " (up)" if up else ""
        if lease:
            return f"{ends} created{state} (leased: deleted when this connection closes)"
        return f"{ends} created{state}"

    def _record(self, call: _Call, name: str, owner: Owner, *, remember: bool) -> LinkRef:
        """Write ``owner`` into the new link ``name`` where the call acts; a link whose
        owner cannot be recorded is deleted again (it would belong to nobody). In a
        namespace the peer owns, nothing is recorded (everything there is its own); in
        another, the kernel takes no alias, so a leased link is remembered here
        (``remember``; a vxcan end there is owned through its peer instead)."""
        link = call.backend.resolve(name)
        if call.where is Where.OWN:
            return link
        if call.where is Where.OTHER:
            if remember:
                self._foreign[(call.key, link.ifindex)] = owner.uid
            return link._replace(alias=owner.alias())
        return self._write_owner(link, owner, lambda: self._delete_quietly(link))

    def _record_peer(self, call: _Call, end: LinkRef, peer: str, owner: Owner) -> LinkRef:
        """Record ``owner`` on a new vxcan's ``peer`` in the daemon's namespace (deleting
        the pair if that fails)."""

        def undo() -> None:
            self._delete_quietly(end, call.backend, call.key)

        try:
            link = self.backend.resolve(peer)
        except BaseException:
            undo()
            raise
        return self._write_owner(link, owner, undo)

    def _write_owner(self, link: LinkRef, owner: Owner, undo: Callable[[], object]) -> LinkRef:
        """Set ``link``'s alias (in the daemon's namespace) to ``owner``, and count it for
        the quota; on failure ``undo()`` (the link would belong to nobody) and re-raise."""
        alias = owner.alias()
        try:
            self.backend.set_alias(link, alias)
        except BaseException:
            undo()
            raise
        if self._owned is not None:
            self._owned[link.ifindex] = owner.uid
        return link._replace(alias=alias)

    def _exists(self, call: _Call, kind: str, *, lease: bool) -> str:
        name = call.request.ifname
        link = self._resolve(call)
        if link.kind != kind:
            raise AlreadyExists(
                f"{name} already exists and is a {link.kind or 'non-virtual'} link, not a "
                f"{kind}; pick another name"
            )
        owner = owner_of(link.alias)
        if lease:
            if (call.key, link.ifindex) in call.session.leases:
                return f"{name} already exists ({kind}, leased by this connection)"
            raise AlreadyExists(
                f"{name} already exists: a leased link must be new (it would be deleted "
                "when this connection closes); pick another name"
            )
        if owner is None or owner.uid == call.session.peer.uid:
            return f"{name} already exists ({kind})"
        return (
            f"{name} already exists ({kind}, owned by {self.policy.database.describe(owner.uid)})"
        )

    def _owned_by(self, uid: int, quota: int) -> int:
        """How many links ``uid`` owns. Counted once from the kernel, then kept by this
        handler; a count at the quota is taken again from the kernel (links may have been
        deleted behind the daemon's back)."""
        owned = self._owned
        foreign = _count(self._foreign, uid)
        if owned is None or _count(owned, uid) + foreign >= quota:
            owned = self._owned = self._count_owners()
        return _count(owned, uid) + foreign

    def _count_owners(self) -> dict[int, int]:
        owned: dict[int, int] = {}
        for status in self.backend.links():
            owner = owner_of(status.alias)
            if owner is not None and status.ifindex is not None:
                owned[status.ifindex] = owner.uid
        return owned

    def _forget(self, key: int, ifindex: int) -> None:
        if key:
            self._foreign.pop((key, ifindex), None)
        elif self._owned is not None:
            self._owned.pop(ifindex, None)

    def _up_down(self, call: _Call) -> str:
        link = self._target(call)
        up = call.request.op is Op.INTERFACE_UP
        call.backend.set_up(link, up)
        return f"{link.name} is {'up' if up else 'down'}"

    def _set_mtu(self, call: _Call) -> str:
        payload = call.request.payload
        if len(payload) != _MTU.size:
            raise InvalidArgument("invalid SET_MTU payload: expected the MTU as u32 LE")
        (mtu,) = _MTU.unpack(payload)
        link = self._target(call)
        call.backend.set_mtu(link, mtu)
        return f"{link.name} mtu {mtu}"

    def _set_can(self, call: _Call) -> str:
        settings = CanSettings.from_payload(call.request.payload)
        link = self._target(call)
        try:
            call.backend.set_can(link, settings)
        except OSError as exc:
            if exc.errno != errno.EOPNOTSUPP:
                raise
            raise NotSupported(settings.refused_by(link.name, self._can_of(call))) from None
        return f"{link.name} CAN settings applied: {settings.to_payload().decode()}"

    def _can_of(self, call: _Call) -> dict[str, Any] | None:
        """The ``can`` part of the STATUS of the link acted on (None if gone or not CAN)."""
        assert call.link is not None
        try:
            return call.backend.status(call.link.name).can
        except OSError:
            return None

    def _restart(self, call: _Call) -> str:
        link = self._target(call)
        call.backend.restart_can(link)
        return f"{link.name} restarted"

    def _delete(self, call: _Call) -> str:
        link = self._target(call)
        call.backend.delete_link(link)
        self._forget(call.key, link.ifindex)
        call.session.leases.pop((call.key, link.ifindex), None)
        return f"{link.name} deleted"

    def _status(self, call: _Call) -> str:
        status = call.backend.status(call.request.ifname)
        if call.key and status.ifindex is not None:
            uid = self._foreign.get((call.key, status.ifindex))
            if uid is not None:
                status = status._replace(alias=Owner(uid, self.lease_holder).alias())
        owner = owner_of(status.alias) if call.where is not Where.OWN else None
        if owner is not None:
            status = status._replace(owner=owner.uid, lease=owner.lease is not None)
        elif status.exists:
            status = status._replace(lease=False)
        return status.to_json()

    def _list(self, call: _Call) -> str:
        after = list_after(call.request.payload)
        peer = call.session.peer
        admin = self.policy.is_admin(peer)
        entries: list[str] = []
        size = last = 0
        more = False
        for status in sorted(call.backend.links(), key=lambda s: s.ifindex or 0):
            index = status.ifindex or 0
            if index <= after:
                continue
            alias = status.alias
            if call.key:
                uid = self._foreign.get((call.key, index))
                alias = Owner(uid, self.lease_holder).alias() if uid is not None else alias
            link = LinkRef(index, status.name, status.kind, alias)
            may = self.policy.allowed(peer, link, call.where)
            if call.key:
                may = [verb for verb in may if verb not in _FOREIGN_CHANGE_VERBS]
            owner = owner_of(alias) if call.where is not Where.OWN else None
            if not (may or admin):
                continue
            entry = _COMPACT.encode(
                {
                    "name": status.name,
                    "index": index,
                    "kind": status.kind,
                    "up": status.up,
                    "owner": owner.uid if owner else None,
                    "owner_name": self.policy.database.name_of(owner.uid) if owner else None,
                    "lease": owner is not None and owner.lease is not None,
                    "may": [verb.value for verb in may],
                }
            )
            if size + len(entry) > _LIST_PAGE:
                more = True
                break
            entries.append(entry)
            size += len(entry) + 1
            last = index
        following = str(last) if more else "null"
        return f'{{"links":[{",".join(entries)}],"next":{following}}}'

    def _netns(self, call: _Call) -> str:
        """Act in the network namespace whose descriptor came with this request (none:
        in the daemon's own) from now on, once the kernel says what it is and the policy
        admits the peer to that kind of namespace."""
        session = call.session
        fd, session.pending_fd = session.pending_fd, None
        try:
            no_payload(call.request.payload, "NETNS")
            if fd is None:
                session.place = None
                return '{"netns":"host","inode":null,"owner":null}'
            try:
                netns = self.classify_netns(fd, session.peer.uid)
            except NotANetns as exc:
                raise InvalidArgument(f"refusing NETNS: {exc}") from None
            refusal = self.policy.entry_refusal(session.peer, netns.where, netns.owner)
            if refusal is not None:
                raise PermissionDenied(refusal)
            place = session.places.get(netns.inode)
            if netns.where is not Where.HOST and place is None:
                if len(session.places) >= MAX_NAMESPACES:
                    raise DaemonBusy(
                        f"refusing NETNS: this connection already uses {MAX_NAMESPACES} "
                        "network namespaces (the most one may); use another connection"
                    )
                place = Place(netns, self.backend.for_netns(netns))
                session.places[netns.inode] = place
                fd = None  # the place keeps it (closed when the session ends)
        finally:
            if fd is not None:
                os.close(fd)
        session.place = place if netns.where is not Where.HOST else None
        return _COMPACT.encode(
            {"netns": netns.where.value, "inode": netns.inode, "owner": netns.owner}
        )

    def _route(self, call: _Call) -> str:
        """Add or delete the CAN gateway route(s) between two links of the daemon's
        namespace (whatever namespace the connection acts in)."""
        options = route_options(call.request.payload)
        src = call.link = self.backend.resolve(call.request.ifname)
        try:
            dst = self.backend.resolve(options.dst)
        except OSError as exc:
            raise kernel_error(Op.ROUTE, options.dst, exc) from None
        refusal = self.policy.route_refusal(call.session.peer, src, dst)
        if refusal is not None:
            raise PermissionDenied(refusal)
        one = Route(src.ifindex, dst.ifindex, options.can_id, options.mask, options.fd)
        routes = [one, one._replace(src=dst.ifindex, dst=src.ifindex)] if options.both else [one]
        arrow = "<->" if options.both else "->"
        what = f"{src.name} {arrow} {dst.name}"
        session = call.session
        if not options.add:
            for route in routes:
                try:
                    self.backend.delete_route(route)
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.ENOENT):
                        raise
                    raise InvalidArgument(
                        f"no such route {what}: a delete must name the same links, CAN-ID "
                        "filter and fd setting as the add (`hycan route list` shows them)"
                    ) from None
                session.routes = [r for r in session.routes if not r.same_job(route)]
            return f"route {what} deleted"
        done: list[Route] = []
        try:
            for route in routes:
                self.backend.add_route(route)
                done.append(route)
        except OSError as exc:
            for route in done:
                self._delete_route_quietly(route)
            if exc.errno == errno.ENODEV:
                raise InvalidArgument(
                    f"cannot route {what}: both ends must be CAN links (vcan, vxcan, can)"
                ) from None
            if exc.errno in (errno.EOPNOTSUPP, errno.EPFNOSUPPORT, errno.EAFNOSUPPORT):
                raise NotSupported(module_missing("can-gw")) from None
            raise
        if options.lease:
            session.routes += routes
            return f"route {what} added (leased: deleted when this connection closes)"
        return f"route {what} added"

    def _routes(self, call: _Call) -> str:
        """The CAN gateway routes that touch a link of the peer's (an admin: all)."""
        no_payload(call.request.payload, "ROUTES")
        peer = call.session.peer
        admin = self.policy.is_admin(peer)
        links = {s.ifindex: s for s in self.backend.links() if s.ifindex is not None}
        entries: list[str] = []
        for route in self.backend.routes():
            ends = [links.get(route.src), links.get(route.dst)]
            owners = [owner_of(end.alias) if end is not None else None for end in ends]
            uids = [owner.uid for owner in owners if owner is not None]
            if not admin and peer.uid not in uids:
                continue
            entries.append(
                _COMPACT.encode(
                    {
                        "src": ends[0].name if ends[0] is not None else str(route.src),
                        "dst": ends[1].name if ends[1] is not None else str(route.dst),
                        "can_id": route.can_id,
                        "mask": route.mask,
                        "fd": route.fd,
                        "echo": route.echo,
                        "handled": route.handled,
                        "dropped": route.dropped,
                        "owner": uids[0] if uids else None,
                        "lease": any(o is not None and o.lease is not None for o in owners)
                        or any(r.same_job(route) for r in call.session.routes),
                    }
                )
            )
        return f'{{"routes":[{",".join(entries)}]}}'

    def _watch(self, call: _Call) -> str:
        """Turn the connection into a stream of link events (the server sends them).
        Every admitted peer may watch: the kernel announces link changes to any process
        (``ip monitor link``), so this reveals nothing a member could not see."""
        names = watch_names(call.request.payload)
        if call.session.place is not None:
            raise NotSupported(
                "not supported: WATCH reports the links of the daemon's network namespace; "
                "inside your own namespace run `ip monitor link` (no privilege needed)"
            )
        call.session.watch = names or frozenset()
        return _COMPACT.encode(
            {
                "watching": sorted(names) if names else None,
                "poll": POLL_INTERVAL,
                "queue": QUEUE_CAPACITY,
            }
        )


def _count(owned: Mapping[Any, int], uid: int) -> int:
    return sum(1 for owner in owned.values() if owner == uid)


_OPS: dict[Op, _OpFunction] = {
    Op.PING: Handler._ping_op,
    Op.CREATE_VCAN: Handler._create_vcan,
    Op.CREATE_LINK: Handler._create_link,
    Op.INTERFACE_UP: Handler._up_down,
    Op.INTERFACE_DOWN: Handler._up_down,
    Op.SET_MTU: Handler._set_mtu,
    Op.SET_CAN: Handler._set_can,
    Op.CAN_RESTART: Handler._restart,
    Op.DELETE: Handler._delete,
    Op.STATUS: Handler._status,
    Op.LIST: Handler._list,
    Op.NETNS: Handler._netns,
    Op.ROUTE: Handler._route,
    Op.ROUTES: Handler._routes,
    Op.WATCH: Handler._watch,
}
_FOREIGN_CHANGE_VERBS = frozenset(VERB_OF_OP[op] for op in _CHANGES)


def kernel_error(op: Op, name: str, exc: OSError) -> HycanError:
    """Map a kernel errno from ``op`` on ``name`` to a hycan error with an actionable message."""
    code = exc.errno
    what, fallback = _FAILURE.get(op, ("handling", ErrorCode.INTERNAL))
    if isinstance(exc, TimeoutError):
        return Timeout(f"{what} {name} failed: the kernel did not answer in time")
    if code == errno.ENODEV:
        return InterfaceNotFound(f"interface {name} not found")
    if code in (errno.EPERM, errno.EACCES):
        return PermissionDenied(
            f"permission denied by the kernel for {name}: the daemon needs CAP_NET_ADMIN "
            "in this network namespace"
        )
    if code == errno.EOPNOTSUPP and op in (Op.CREATE_VCAN, Op.CREATE_LINK):
        return NotSupported(module_missing())
    if code == errno.EOPNOTSUPP and op is Op.CAN_RESTART:
        return NotSupported(f"not supported: {name} is not a CAN controller")
    if code == errno.EBUSY and op is Op.CAN_RESTART:
        return LinkBusy(f"{name} is not in bus-off state: there is nothing to restart")
    if code == errno.EBUSY:
        return LinkBusy(
            f"{name} is up: bring it down first (`hycan down {name}`); "
            "hycan never bounces a link for you"
        )
    if code == errno.EINVAL and op is Op.SET_MTU:
        return InvalidArgument(
            f"the kernel rejected this MTU for {name} "
            "(a vcan takes 16 for classic CAN or 72 for CAN FD)"
        )
    if code == errno.EINVAL and op is Op.SET_CAN:
        return InvalidArgument(
            f"the kernel rejected these CAN settings for {name}: is the bitrate reachable "
            "with this controller's clock, are the segments within its limits, is the "
            "termination one it offers? (`hycan status` shows its clock, limits and values)"
        )
    if code == errno.EINVAL and op is Op.CAN_RESTART:
        return LinkBusy(f"{name} is down: bring it up before restarting it")
    if code == errno.EOPNOTSUPP:
        return NotSupported(f"not supported: the kernel cannot do this on {name}")
    reason = exc.strerror or str(exc)
    return OperationFailed(f"{what} {name} failed: {reason} (errno {code})", fallback)
