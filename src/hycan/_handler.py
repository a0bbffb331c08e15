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
from typing import NamedTuple, Protocol

from hycan import __version__
from hycan._advice import vcan_missing
from hycan._canconfig import CanSettings
from hycan._protocol import PROTOCOL_VERSION, Op, Request, Response, failure, ok
from hycan.backends.base import Backend, LinkRef
from hycan.errors import (
    AlreadyExists,
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
}
_CAN_OPS = (Op.SET_CAN, Op.CAN_RESTART)
_MTU = struct.Struct("<I")


class LinkPolicy(Protocol):
    """Decides whether UP/DOWN/SET_*/RESTART may act on a link (the daemon's rules)."""

    def refusal(self, op: Op, link: LinkRef) -> str | None:
        """None to allow ``op`` on ``link`` (as the kernel knows it), else the reason."""


class Answer(NamedTuple):
    """A response, and the kernel's name of the link acted on when the request called it
    by another name (an altname), for the audit trail."""

    response: Response
    link: str | None = None


class _Call:
    """One request being performed; remembers the link its name resolved to."""

    __slots__ = ("link", "request")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.link: LinkRef | None = None


_OpFunction = Callable[["Handler", _Call], str]


class Handler:
    """Executes requests against a backend; ``handle()`` never raises for bad requests.

    Each op is one function (the table ``_OPS``). Ops that change a link resolve the name
    into the link the kernel means first (an altname included) and, with a ``policy`` (the
    daemon), ask it once about that link; the change is then made by index, so it lands on
    the link that was judged. Without a policy (the in-process fallback, which acts with the
    caller's own privileges) any link may be changed. DELETE only ever removes vcan links,
    whatever the policy.
    """

    def __init__(
        self, backend: Backend, *, backend_name: str = "netlink", policy: LinkPolicy | None = None
    ) -> None:
        self.backend = backend
        self.backend_name = backend_name
        self.policy = policy
        self._ping = json.dumps(
            {"protocol": PROTOCOL_VERSION, "version": __version__, "backend": backend_name}
        )

    def handle(self, request: Request) -> Response:
        """Perform ``request`` and return its response (errors become failure responses)."""
        return self.answer(request).response

    def answer(self, request: Request) -> Answer:
        """Perform ``request``: its response, and which link it acted on."""
        call = _Call(request)
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

    def _resolve(self, call: _Call) -> LinkRef:
        """The link the request's name means (remembered for the audit trail)."""
        link = call.link = self.backend.resolve(call.request.ifname)
        return link

    def _target(self, call: _Call) -> LinkRef:
        """The link the request's name means, once the policy (if any) allows the op on it."""
        link = self._resolve(call)
        if self.policy is not None:
            refusal = self.policy.refusal(call.request.op, link)
            if refusal is not None:
                raise PermissionDenied(refusal)
        return link

    def _ping_op(self, call: _Call) -> str:
        return self._ping

    def _create_vcan(self, call: _Call) -> str:
        name = call.request.ifname
        try:
            self.backend.add_link(name, "vcan")
        except FileExistsError:
            kind = self.backend.status(name).kind
            if kind == "vcan":
                return f"{name} already exists (vcan)"
            raise AlreadyExists(
                f"{name} already exists and is a {kind or 'non-virtual'} link, not a vcan; "
                "pick another name"
            ) from None
        return f"{name} created"

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
        link = self._resolve(call)  # whatever the policy: DELETE judges the kind itself
        if link.kind != "vcan":
            raise PermissionDenied(
                f"refusing to delete {link.name}: it is a {link.kind or 'non-virtual'} link "
                "and hycan only deletes vcan links"
            )
        self.backend.delete_link(link)
        return f"{link.name} deleted"

    def _status(self, call: _Call) -> str:
        return self.backend.status(call.request.ifname).to_json()


_OPS: dict[Op, _OpFunction] = {
    Op.PING: Handler._ping_op,
    Op.CREATE_VCAN: Handler._create_vcan,
    Op.INTERFACE_UP: Handler._up_down,
    Op.INTERFACE_DOWN: Handler._up_down,
    Op.SET_MTU: Handler._set_mtu,
    Op.SET_CAN: Handler._set_can,
    Op.CAN_RESTART: Handler._restart,
    Op.DELETE: Handler._delete,
    Op.STATUS: Handler._status,
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
    if code == errno.EOPNOTSUPP and op is Op.CREATE_VCAN:
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
