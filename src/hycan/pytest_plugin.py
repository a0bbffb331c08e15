"""pytest plugin: every test gets its own fresh, up vcan through ``hycan-daemon`` (no root).

Registered through the ``pytest11`` entry point ``hycan`` (disable with ``-p no:hycan``).
Fixtures:

``vcan``
    The name (a ``str``) of a new vcan, up, unique to the test; deleted afterwards, also
    when the test fails. Every fixture vcan is leased: if the test run itself is killed,
    the daemon deletes its vcans when the run's connection closes.
``vcan_factory``
    A :class:`VcanFactory`: ``a, b = vcan_factory(2)`` creates more vcans, all deleted
    afterwards.
``async_vcan``
    Like ``vcan`` for pytest-trio tests, through ``AsyncDaemonClient`` (needed when the
    daemon runs in the test's own trio loop, where a blocking call would deadlock).
``hycan_client``
    The session's :class:`hycan.DaemonClient`, e.g. for ``hycan_client.status(vcan)``.

Mark a test ``@pytest.mark.hycan_vcan(fd=True)`` for a vcan with MTU 72 (CAN FD) or
``fd=False`` for MTU 16 (classic CAN only); unmarked, the vcan keeps the kernel's default
(72, which carries classic and FD frames).

Options: ``--hycan-socket PATH`` (ini ``hycan_socket``) picks the daemon; otherwise the usual
choice applies (``$HYCAN_DAEMON_SOCKET``, ``/var/run/hycan_daemon.sock``,
``/tmp/hycan_daemon.sock``). When no vcan can be had (no daemon answers, or the kernel lacks
the vcan module) a test using these fixtures errors with the daemon's message;
``--hycan-skip-unavailable`` (ini ``hycan_skip_unavailable = true``) skips it instead. A
refusal (not in the daemon's group, someone else's socket) is an error either way.

pytest loads this module in every run of every project that installs hycan, so it imports
nothing heavy: trio and the daemon connection are only touched when a fixture is used.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from hycan._names import new_vcan_name
from hycan.errors import (
    AlreadyExists,
    DaemonUnavailable,
    HycanError,
    InterfaceNotFound,
    NotSupported,
    PermissionDenied,
)

if TYPE_CHECKING:
    from hycan._async.client import AsyncDaemonClient
    from hycan._sync.client import DaemonClient

__all__ = ["VcanFactory", "new_vcan_name"]

CAN_MTU = 16
CANFD_MTU = 72
MARKER = "hycan_vcan"
_SKIP_HINT = (
    "To skip tests that need a vcan when none can be had, pass --hycan-skip-unavailable "
    "(or set `hycan_skip_unavailable = true` in the pytest configuration)."
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--hycan-socket``, ``--hycan-skip-unavailable`` and their ini twins."""
    group = parser.getgroup("hycan", "hycan vcan fixtures")
    group.addoption(
        "--hycan-socket",
        metavar="PATH",
        default=None,
        help="hycan-daemon socket for the vcan fixtures (default: $HYCAN_DAEMON_SOCKET, "
        "/var/run/hycan_daemon.sock if present, /tmp/hycan_daemon.sock)",
    )
    group.addoption(
        "--hycan-skip-unavailable",
        action="store_true",
        default=None,
        help="skip tests that use the vcan fixtures when no vcan can be had (no daemon, no "
        "vcan module) instead of reporting an error",
    )
    parser.addini(
        "hycan_socket",
        "hycan-daemon socket for the vcan fixtures (relative to the ini file)",
        type="string",
        default="",
    )
    parser.addini(
        "hycan_skip_unavailable",
        "skip, rather than error, tests whose vcan fixture cannot get a vcan",
        type="bool",
        default=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``hycan_vcan`` marker (so ``--strict-markers`` accepts it)."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(fd=None): options for the vcan/async_vcan fixtures; fd=True sets MTU 72 "
        "(CAN FD), fd=False MTU 16 (classic CAN), None keeps the kernel default (72)",
    )


@dataclass(frozen=True, slots=True)
class _Settings:
    socket_path: str | None
    skip_unavailable: bool


def _settings(config: pytest.Config) -> _Settings:
    socket_path: str | None = config.getoption("hycan_socket")
    if not socket_path:
        ini_value = str(config.getini("hycan_socket"))
        if ini_value:
            base = config.inipath.parent if config.inipath else config.rootpath
            socket_path = os.path.join(base, ini_value)
        else:
            socket_path = None
    skip: bool | None = config.getoption("hycan_skip_unavailable")
    if skip is None:
        skip = bool(config.getini("hycan_skip_unavailable"))
    return _Settings(socket_path, skip)


@contextlib.contextmanager
def _vcan_or_skip(settings: _Settings) -> Iterator[None]:
    """Turn "this machine cannot give a vcan" into a clear error (or a skip, if asked). A
    refusal (not in the daemon's group, someone else's socket) is always an error: it is
    something to fix, not a machine without vcan."""
    try:
        yield
    except PermissionDenied as exc:
        raise pytest.fail.Exception(f"hycan: no vcan for this test: {exc}", pytrace=False) from None
    except (DaemonUnavailable, NotSupported) as exc:
        message = f"hycan: no vcan for this test: {exc}"
        if settings.skip_unavailable:
            raise pytest.skip.Exception(message) from None
        raise pytest.fail.Exception(f"{message}\n{_SKIP_HINT}", pytrace=False) from None


def _mtu_for(fd: bool | None) -> int | None:
    return None if fd is None else (CANFD_MTU if fd else CAN_MTU)


def _marker_fd(request: pytest.FixtureRequest) -> bool | None:
    marker = request.node.get_closest_marker(MARKER)
    if marker is None:
        return None
    unknown = set(marker.kwargs) - {"fd"}
    if marker.args or unknown or marker.kwargs.get("fd") not in (True, False, None):
        raise pytest.UsageError(
            f"@pytest.mark.{MARKER} takes only fd=True|False|None, got "
            f"args {marker.args!r}, keywords {marker.kwargs!r}"
        )
    fd: bool | None = marker.kwargs.get("fd")
    return fd


# --- sync ---------------------------------------------------------------------------------


def _create(client: DaemonClient, *, up: bool = True, fd: bool | None = None) -> str:
    # Leased: a leased vcan is always new (never someone else's, adopted and later deleted)
    # and goes with the connection, so a test run that is killed leaves none behind.
    for _ in range(8):
        name = new_vcan_name()
        try:
            client.create_vcan(name, lease=True)
            break
        except AlreadyExists:  # pragma: no cover (a random 32-bit name already taken)
            continue
    else:  # pragma: no cover
        raise RuntimeError("hycan: could not find an unused vcan name")
    try:
        mtu = _mtu_for(fd)
        if mtu is not None:
            client.set_mtu(name, mtu)
        if up:
            client.up(name)
    except BaseException as exc:
        try:
            _delete(client, name)
        except HycanError as cleanup:
            exc.add_note(f"hycan: and deleting {name} failed too, it may be left over: {cleanup}")
        raise
    return name


def _delete(client: DaemonClient, name: str) -> None:
    with contextlib.suppress(InterfaceNotFound):  # the test deleted it itself
        client.delete(name)


class VcanFactory:
    """Creates fresh vcans for one test; every vcan it made is deleted at teardown."""

    def __init__(self, client: DaemonClient, settings: _Settings) -> None:
        self.client = client
        self._settings = settings
        self._names: list[str] = []

    @property
    def names(self) -> tuple[str, ...]:
        """Every vcan created so far, oldest first."""
        return tuple(self._names)

    def __call__(self, count: int = 1, *, up: bool = True, fd: bool | None = None) -> list[str]:
        """Create ``count`` vcans (up unless ``up=False``; ``fd`` as for the marker) and
        return their names: ``[a] = vcan_factory()``, ``a, b = vcan_factory(2)``."""
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        created: list[str] = []
        with _vcan_or_skip(self._settings):
            for _ in range(count):
                name = _create(self.client, up=up, fd=fd)
                self._names.append(name)
                created.append(name)
        return created

    def cleanup(self) -> None:
        """Delete every vcan made so far (all are tried; the first failure is raised)."""
        first: Exception | None = None
        while self._names:
            name = self._names.pop()
            try:
                _delete(self.client, name)
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first


@pytest.fixture(scope="session")
def hycan_client(pytestconfig: pytest.Config) -> Iterator[DaemonClient]:
    """One daemon connection for the session, as chosen by ``--hycan-socket``."""
    from hycan._sync.client import DaemonClient

    settings = _settings(pytestconfig)
    client = DaemonClient(settings.socket_path)
    try:
        with _vcan_or_skip(settings):
            client.connect()
        yield client
    finally:
        client.close()


@pytest.fixture
def vcan_factory(pytestconfig: pytest.Config, hycan_client: DaemonClient) -> Iterator[VcanFactory]:
    """Create any number of fresh vcans; all are deleted after the test."""
    factory = VcanFactory(hycan_client, _settings(pytestconfig))
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def vcan(request: pytest.FixtureRequest, vcan_factory: VcanFactory) -> str:
    """The name of a fresh vcan, up, deleted after the test (even when it fails)."""
    [name] = vcan_factory(fd=_marker_fd(request))
    return name


# --- trio ---------------------------------------------------------------------------------


async def _acreate(client: AsyncDaemonClient, *, fd: bool | None) -> str:
    for _ in range(8):  # leased, as in _create
        name = new_vcan_name()
        try:
            await client.create_vcan(name, lease=True)
            break
        except AlreadyExists:  # pragma: no cover
            continue
    else:  # pragma: no cover
        raise RuntimeError("hycan: could not find an unused vcan name")
    try:
        mtu = _mtu_for(fd)
        if mtu is not None:
            await client.set_mtu(name, mtu)
        await client.up(name)
    except BaseException as exc:
        try:
            await _adelete(client, name)
        except HycanError as cleanup:
            exc.add_note(f"hycan: and deleting {name} failed too, it may be left over: {cleanup}")
        raise
    return name


async def _adelete(client: AsyncDaemonClient, name: str) -> None:
    import trio

    # Shielded: a cancelled or crashed test must still not leak its vcan.
    with trio.CancelScope(shield=True), contextlib.suppress(InterfaceNotFound):
        await client.delete(name)


@pytest.fixture
async def async_vcan(
    request: pytest.FixtureRequest, pytestconfig: pytest.Config
) -> AsyncIterator[str]:
    """``vcan`` for pytest-trio tests, through ``AsyncDaemonClient``."""
    import trio

    from hycan._async.client import AsyncDaemonClient

    settings = _settings(pytestconfig)
    fd = _marker_fd(request)
    client = AsyncDaemonClient(settings.socket_path)
    try:
        with _vcan_or_skip(settings):
            name = await _acreate(client, fd=fd)
        try:
            yield name
        finally:
            await _adelete(client, name)
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()
