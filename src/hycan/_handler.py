"""Request -> Response: the semantics of every op on top of a :class:`Backend`.

Shared by the daemon and the in-process fallback, so both answer identically. Pure and
synchronous: no sockets, no trio. Kernel errno values become hycan errors here, with
messages a person can act on.
"""

from __future__ import annotations

import errno
import json
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from hycan import __version__
from hycan._advice import vcan_missing
from hycan._canconfig import CanSettings, json_object
from hycan._owner import Owner, holder_alive, owner_of, this_process
from hycan._peercred import PeerCredentials
from hycan._protocol import PROTOCOL_VERSION, Op, Request, Response, failure, ok
from hycan._status import COMPACT as _COMPACT
from hycan.backends.base import Backend, LinkRef
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
}
_CAN_OPS = (Op.SET_CAN, Op.CAN_RESTART)
_LIST_PAGE = 60_000  # bytes of LIST entries per reply (a reply holds at most 65535)
_MTU = struct.Struct("<I")


class Answer(NamedTuple):
    """A response, and the kernel's name of the link acted on when the request called it
    by another name (an altname), for the audit trail."""

    response: Response
    link: str | None = None


class Session:
    """One client connection as the handler sees it: who asks (the peer's credentials
    from the kernel) and the links it leases (ifindex -> link), which go when it ends."""

    __slots__ = ("leases", "peer")

    def __init__(self, peer: PeerCredentials) -> None:
        self.peer = peer
        self.leases: dict[int, LinkRef] = {}


class _Call:
    """One request being performed; remembers the link its name resolved to."""

    __slots__ = ("link", "request", "session")

    def __init__(self, request: Request, session: Session) -> None:
        self.request = request
        self.session = session
        self.link: LinkRef | None = None


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
    ) -> None:
        self.backend = backend
        self.backend_name = backend_name
        self.policy = policy or Policy(Rules.defaults())  # the daemon's, without flags
        self.lease_holder = lease_holder or this_process()
        self._owned: dict[int, int] | None = None  # ifindex -> owner uid, once counted
        self._ping = json.dumps(
            {"protocol": PROTOCOL_VERSION, "version": __version__, "backend": backend_name}
        )

    def answer(self, request: Request, session: Session) -> Answer:
        """Perform ``request`` for ``session``: its response, and which link it acted on."""
        call = _Call(request, session)
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
        """Delete every link ``session`` leases (its connection ended): (name, None) for
        each one deleted or already gone, (name, reason) for one the kernel kept."""
        done: list[tuple[str, str | None]] = []
        leases, session.leases = session.leases, {}
        for link in leases.values():
            done.append((link.name, self._delete_quietly(link)))
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

    def _delete_quietly(self, link: LinkRef) -> str | None:
        try:
            self.backend.delete_link(link)
        except OSError as exc:
            if exc.errno != errno.ENODEV:
                return exc.strerror or str(exc)
        self._forget(link.ifindex)
        return None

    def _resolve(self, call: _Call) -> LinkRef:
        """The link the request's name means (remembered for the audit trail)."""
        link = call.link = self.backend.resolve(call.request.ifname)
        return link

    def _target(self, call: _Call) -> LinkRef:
        """The link the request's name means, once the policy allows the op on it."""
        link = self._resolve(call)
        refusal = self.policy.refusal(call.session.peer, VERB_OF_OP[call.request.op], link)
        if refusal is not None:
            raise PermissionDenied(refusal)
        return link

    def _ping_op(self, call: _Call) -> str:
        return self._ping

    def _create_vcan(self, call: _Call) -> str:
        return self._create(call, "vcan", lease=False)

    def _create_link(self, call: _Call) -> str:
        kind, lease = _create_options(call.request.payload)
        return self._create(call, kind, lease=lease)

    def _create(self, call: _Call, kind: str, *, lease: bool) -> str:
        name = call.request.ifname
        peer = call.session.peer
        decision = self.policy.decide(peer, Verb.CREATE, LinkRef(0, name, kind))
        if decision.refusal is not None:
            raise PermissionDenied(decision.refusal)
        quota = self.policy.max_links(peer, decision)
        if quota is not None and (have := self._owned_by(peer.uid, quota)) >= quota:
            if self.backend.status(name).exists:  # asking for an existing one is no new link
                return self._exists(call, kind, lease=lease)
            raise DaemonBusy(
                f"refusing to create {name}: {self.policy.database.describe(peer.uid)} "
                f"already owns {have} links and may own at most {quota} (the daemon's link "
                "quota: --max-links-per-uid or the policy's max_links); delete some first "
                "(`hycan list` shows them)"
            )
        try:
            self.backend.add_link(name, kind)
        except FileExistsError:
            return self._exists(call, kind, lease=lease)
        owner = Owner(peer.uid, self.lease_holder if lease else None)
        link = self._record(name, owner)
        call.link = link
        if lease:
            call.session.leases[link.ifindex] = link
            return f"{name} created (leased: deleted when this connection closes)"
        return f"{name} created"

    def _record(self, name: str, owner: Owner) -> LinkRef:
        """Write ``owner`` into the new link ``name``; a link whose owner cannot be recorded
        is deleted again (it would belong to nobody)."""
        alias = owner.alias()
        link = self.backend.resolve(name)
        try:
            self.backend.set_alias(link, alias)
        except BaseException:
            self._delete_quietly(link)
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
            if link.ifindex in call.session.leases:
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
        if owned is None or _count(owned, uid) >= quota:
            owned = self._owned = self._count_owners()
        return _count(owned, uid)

    def _count_owners(self) -> dict[int, int]:
        owned: dict[int, int] = {}
        for status in self.backend.links():
            owner = owner_of(status.alias)
            if owner is not None and status.ifindex is not None:
                owned[status.ifindex] = owner.uid
        return owned

    def _forget(self, ifindex: int) -> None:
        if self._owned is not None:
            self._owned.pop(ifindex, None)

    def _up_down(self, call: _Call) -> str:
        link = self._target(call)
        up = call.request.op is Op.INTERFACE_UP
        self.backend.set_up(link, up)
        return f"{link.name} is {'up' if up else 'down'}"

    def _set_mtu(self, call: _Call) -> str:
        payload = call.request.payload
        if len(payload) != _MTU.size:
            raise InvalidArgument("invalid SET_MTU payload: expected the MTU as u32 LE")
        (mtu,) = _MTU.unpack(payload)
        link = self._target(call)
        self.backend.set_mtu(link, mtu)
        return f"{link.name} mtu {mtu}"

    def _set_can(self, call: _Call) -> str:
        settings = CanSettings.from_payload(call.request.payload)
        link = self._target(call)
        self.backend.set_can(link, settings)
        return f"{link.name} CAN settings applied: {settings.to_payload().decode()}"

    def _restart(self, call: _Call) -> str:
        link = self._target(call)
        self.backend.restart_can(link)
        return f"{link.name} restarted"

    def _delete(self, call: _Call) -> str:
        link = self._target(call)
        self.backend.delete_link(link)
        self._forget(link.ifindex)
        call.session.leases.pop(link.ifindex, None)
        return f"{link.name} deleted"

    def _status(self, call: _Call) -> str:
        status = self.backend.status(call.request.ifname)
        owner = owner_of(status.alias)
        if owner is not None:
            status = status._replace(owner=owner.uid, lease=owner.lease is not None)
        elif status.exists:
            status = status._replace(lease=False)
        return status.to_json()

    def _list(self, call: _Call) -> str:
        after = _list_after(call.request.payload)
        peer = call.session.peer
        admin = self.policy.is_admin(peer)
        entries: list[str] = []
        size = last = 0
        more = False
        for status in sorted(self.backend.links(), key=lambda s: s.ifindex or 0):
            index = status.ifindex or 0
            if index <= after:
                continue
            link = LinkRef(index, status.name, status.kind, status.alias)
            may = self.policy.allowed(peer, link)
            owner = owner_of(status.alias)
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


def _count(owned: dict[int, int], uid: int) -> int:
    return sum(1 for owner in owned.values() if owner == uid)


def _json_payload(payload: bytes, op: str) -> dict[str, Any]:
    """A payload that must be a JSON object (empty: ``{}``)."""
    return json_object(payload, f"invalid {op} payload") if payload else {}


def _create_options(payload: bytes) -> tuple[str, bool]:
    """CREATE_LINK's ``{"kind": "vcan", "lease": bool}``: (kind, lease)."""
    data = _json_payload(payload, "CREATE_LINK")
    unknown = sorted(set(data) - {"kind", "lease"})
    if unknown:
        raise InvalidArgument(
            f"invalid CREATE_LINK payload: unknown key {json.dumps(unknown[0])[:40]} "
            "(known: kind, lease)"
        )
    kind = data.get("kind", "vcan")
    lease = data.get("lease", False)
    if type(kind) is not str or type(lease) is not bool:
        raise InvalidArgument(
            'invalid CREATE_LINK payload: "kind" must be a string and "lease" true or false'
        )
    return kind, lease


def _list_after(payload: bytes) -> int:
    """LIST's ``{"after": ifindex}`` (0 when absent): where the page starts."""
    data = _json_payload(payload, "LIST")
    after = data.get("after", 0)
    if set(data) - {"after"} or type(after) is not int or not 0 <= after <= 0x7FFFFFFF:
        raise InvalidArgument('invalid LIST payload: expected {"after": IFINDEX} or nothing')
    return after


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
}


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
        return NotSupported(vcan_missing())
    if code == errno.EOPNOTSUPP and op in _CAN_OPS:
        return NotSupported(
            f"not supported: {name} does not support these CAN settings (a vcan has no "
            "bit timing at all; some controllers lack CAN FD or bus-off restart)"
        )
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
            f"the kernel rejected these CAN settings for {name} (is the bitrate reachable "
            "with this controller's clock? CAN FD data bitrate needs fd on)"
        )
    if code == errno.EINVAL and op is Op.CAN_RESTART:
        return LinkBusy(f"{name} is down: bring it up before restarting it")
    if code == errno.EOPNOTSUPP:
        return NotSupported(f"not supported: the kernel cannot do this on {name}")
    reason = exc.strerror or str(exc)
    return OperationFailed(f"{what} {name} failed: {reason} (errno {code})", fallback)
