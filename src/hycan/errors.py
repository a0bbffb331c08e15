"""The hycan exception tree and the wire error codes it maps to.

Every error a user can meet is a :class:`HycanError` with an :class:`ErrorCode` and a message
a person can act on (``str(error)``). Codes 0-9 keep the meanings of the C++ HyCAN daemon;
hycan's own codes start at 10; codes 20 and 21 are the client's own, never sent on the wire.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """Error codes carried in byte 1 of a failure response (see docs/protocol.md)."""

    # C++ HyCAN compatible (0-9). 2 was never sent by the C++ daemon and stays unused.
    VCAN_CHECKING = 0
    NL_SOCKET_ALLOC = 1
    RTNL_LINK_ALLOC = 3
    RTNL_LINK_ADD = 4
    NETLINK_SOCKET_NOT_INITIALIZED = 5
    NETLINK_CONNECT = 6  # bad frame / unknown op
    INTERFACE_NOT_FOUND = 7
    BRING_DOWN = 8
    BRING_UP = 9
    # hycan (10+)
    PERMISSION_DENIED = 10
    INVALID_NAME = 11
    NOT_SUPPORTED = 12
    ALREADY_EXISTS = 13
    DELETE_FAILED = 14
    INTERNAL = 15
    BUSY = 16
    TIMEOUT = 17
    LINK_BUSY = 18
    INVALID_ARGUMENT = 19
    # client side only: never sent on the wire (a daemon that sends it is OperationFailed)
    DAEMON_UNAVAILABLE = 20
    LEASE_LOST = 21


class HycanError(Exception):
    """Root of every hycan error: a ``code`` (see :class:`ErrorCode`) and a human ``message``."""

    default_code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, code: ErrorCode | int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code: ErrorCode | int = self.default_code if code is None else code

    def __str__(self) -> str:
        return self.message


class DaemonUnavailable(HycanError):
    """No daemon answered on any socket path tried (and no in-process fallback applied)."""

    default_code = ErrorCode.DAEMON_UNAVAILABLE


class LeaseLost(HycanError):
    """The connection that leased links closed, and the daemon deleted them with it."""

    default_code = ErrorCode.LEASE_LOST


class ProtocolError(HycanError):
    """A frame broke the wire protocol (bad frame, unknown op, oversized data)."""

    default_code = ErrorCode.NETLINK_CONNECT


class PermissionDenied(HycanError):
    """The daemon (or the kernel) refused the caller or the operation."""

    default_code = ErrorCode.PERMISSION_DENIED


class InvalidName(HycanError):
    """The interface name breaks the kernel's naming rules."""

    default_code = ErrorCode.INVALID_NAME


class InterfaceNotFound(HycanError):
    """No link of that name exists."""

    default_code = ErrorCode.INTERFACE_NOT_FOUND


class NotSupported(HycanError):
    """The kernel or the daemon cannot do this (e.g. the vcan module is missing)."""

    default_code = ErrorCode.NOT_SUPPORTED


class OperationFailed(HycanError):
    """The kernel refused an operation for another reason; ``code`` says which step."""

    default_code = ErrorCode.INTERNAL


class AlreadyExists(OperationFailed):
    """A link of that name exists but is not a vcan."""

    default_code = ErrorCode.ALREADY_EXISTS


class LinkBusy(OperationFailed):
    """The link is in a state that forbids the change (e.g. it must be down first)."""

    default_code = ErrorCode.LINK_BUSY


class InvalidArgument(OperationFailed):
    """A value the daemon or the kernel rejects (an MTU, a bitrate, ...)."""

    default_code = ErrorCode.INVALID_ARGUMENT


class DaemonBusy(OperationFailed):
    """The daemon refused the connection because a limit was reached."""

    default_code = ErrorCode.BUSY


class Timeout(HycanError):
    """The daemon or the kernel did not answer in time."""

    default_code = ErrorCode.TIMEOUT


_CLASS_BY_CODE: dict[int, type[HycanError]] = {
    ErrorCode.NETLINK_CONNECT: ProtocolError,
    ErrorCode.INTERFACE_NOT_FOUND: InterfaceNotFound,
    ErrorCode.PERMISSION_DENIED: PermissionDenied,
    ErrorCode.INVALID_NAME: InvalidName,
    ErrorCode.NOT_SUPPORTED: NotSupported,
    ErrorCode.ALREADY_EXISTS: AlreadyExists,
    ErrorCode.BUSY: DaemonBusy,
    ErrorCode.LINK_BUSY: LinkBusy,
    ErrorCode.INVALID_ARGUMENT: InvalidArgument,
    ErrorCode.TIMEOUT: Timeout,
}


_KNOWN = {int(code): code for code in ErrorCode}


def error_for_code(code: int, message: str) -> HycanError:
    """Build the exception that a failure response with ``code`` stands for."""
    return _CLASS_BY_CODE.get(code, OperationFailed)(message, _KNOWN.get(code, code))
