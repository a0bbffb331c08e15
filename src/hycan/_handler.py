"""Request -> Response: the semantics of every op on top of a :class:`Backend`.

Shared by the daemon and the in-process fallback, so both answer identically. Pure and
synchronous: no sockets, no trio. Kernel errno values become hycan errors here, with
messages a person can act on.
"""

from __future__ import annotations

import errno
import json
import struct
from typing import Protocol

from hycan import __version__
from hycan._canconfig import CanSettings
from hycan._protocol import PROTOCOL_VERSION, Op, Request, Response, failure, ok
from hycan.backends.base import Backend, LinkStatus
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

VCAN_MISSING = (
    "not supported: the vcan kernel module is missing "
    "(run `modprobe vcan`, or install linux-modules-extra-$(uname -r))"
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
_POLICED_OPS = (Op.INTERFACE_UP, Op.INTERFACE_DOWN, Op.SET_MTU, *_CAN_OPS)
_MTU = struct.Struct("<I")


class LinkPolicy(Protocol):
    """Decides whether UP/DOWN/SET_*/RESTART may act on a link (the daemon's rules)."""

    def name_allowed(self, name: str) -> bool:
        """True if the name alone admits the link (no need to look it up)."""

    def refusal(self, op: Op, status: LinkStatus) -> str | None:
        """None to allow ``op`` on the link ``status`` describes, else the reason to refuse."""


class Handler:
    """Executes requests against a backend; ``handle()`` never raises for bad requests.

    With a ``policy``, UP/DOWN first ask it, looking the link up unless its name alone
    admits it (the daemon);
    without one (the in-process fallback, which acts with the caller's own privileges)
    any link may be toggled. DELETE only ever removes vcan links, whatever the policy.
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
        try:
            return ok(self._perform(request))
        except HycanError as exc:
            return failure(exc.code or ErrorCode.INTERNAL, exc.message)
        except OSError as exc:
            error = kernel_error(request.op, request.ifname, exc)
            return failure(error.code or ErrorCode.INTERNAL, error.message)

    def _perform(self, request: Request) -> str:
        op, backend = request.op, self.backend
        if op is Op.PING:
            return self._ping
        name = request.ifname
        if op is Op.CREATE_VCAN:
            return self._create_vcan(name)
        if op in _POLICED_OPS and self.policy is not None:
            self._apply_policy(op, name)
        if op is Op.INTERFACE_UP or op is Op.INTERFACE_DOWN:
            backend.set_up(name, op is Op.INTERFACE_UP)
            return f"{name} is {'up' if op is Op.INTERFACE_UP else 'down'}"
        if op is Op.SET_MTU:
            if len(request.payload) != _MTU.size:
                raise InvalidArgument("invalid SET_MTU payload: expected the MTU as u32 LE")
            (mtu,) = _MTU.unpack(request.payload)
            backend.set_mtu(name, mtu)
            return f"{name} mtu {mtu}"
        if op is Op.SET_CAN:
            settings = CanSettings.from_payload(request.payload)
            backend.set_can(name, settings)
            return f"{name} CAN settings applied: {settings.to_payload().decode()}"
        if op is Op.CAN_RESTART:
            backend.restart_can(name)
            return f"{name} restarted"
        if op is Op.DELETE:
            self._require_vcan(name)
            backend.delete_link(name)
            return f"{name} deleted"
        assert op is Op.STATUS
        return backend.status(name).to_json()

    def _create_vcan(self, name: str) -> str:
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

    def _kind(self, name: str) -> str | None:
        try:
            return self.backend.kind(name)
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                raise InterfaceNotFound(f"interface {name} not found") from None
            raise

    def _apply_policy(self, op: Op, name: str) -> None:
        assert self.policy is not None
        if self.policy.name_allowed(name):
            return  # allow-listed by name: whatever the link is, it may be acted on
        refusal = self.policy.refusal(op, LinkStatus(name, exists=True, kind=self._kind(name)))
        if refusal is not None:
            raise PermissionDenied(refusal)

    def _require_vcan(self, name: str) -> None:
        kind = self._kind(name)
        if kind != "vcan":
            raise PermissionDenied(
                f"refusing to delete {name}: it is a {kind or 'non-virtual'} link "
                "and hycan only deletes vcan links"
            )


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
        return NotSupported(VCAN_MISSING)
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
