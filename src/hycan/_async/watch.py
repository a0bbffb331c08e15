"""A stream of link events from ``hycan-daemon`` (WATCH), on a connection of its own.

This file is the single source of the watch iterator: ``scripts/unasync.py`` generates
``hycan/_sync/watch.py`` from it, as it does the client.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Self

from hycan._async.transport import AsyncSocketTransport, clock
from hycan._protocol import Op, encode_request
from hycan.errors import error_for_code

if TYPE_CHECKING:
    from hycan._events import LinkEvent


class AsyncWatch:
    """The link events (:class:`hycan.LinkEvent`) of the links named (none: every link of
    the daemon's namespace), from the moment the watch started: on entering the context,
    or on the first event asked for. Iteration ends when the daemon closes the
    connection; a ``lost`` event says how many events the daemon dropped because they
    were not read in time."""

    def __init__(self, transport: AsyncSocketTransport, names: tuple[str, ...], timeout: float):
        from hycan._events import watch_payload  # kept off `import hycan`

        self._transport = transport
        self._frame = encode_request(Op.WATCH, b"", watch_payload(names))
        self._timeout = timeout
        self._started = False

    async def start(self) -> None:
        """Start watching now (iterating starts it otherwise); raises ``HycanError`` if
        the daemon refuses."""
        if self._started:
            return
        self._started = True
        deadline = clock() + self._timeout
        response = await self._transport.roundtrip(self._frame, deadline, stream=True)
        if not response.success:
            self._transport.close()
            raise error_for_code(response.code, response.message)

    async def next_event(self, timeout: float | None = None) -> LinkEvent | None:
        """The next event, waiting at most ``timeout`` seconds (None: as long as it takes;
        then ``Timeout``); None once the daemon has ended the watch."""
        await self.start()
        deadline = None if timeout is None else clock() + timeout
        reply = await self._transport.next_reply(deadline)
        if reply is None:
            return None
        from hycan._events import LinkEvent

        return LinkEvent.from_json(reply.message)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> LinkEvent:
        event = await self.next_event()
        if event is None:
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        """Stop watching (close the connection)."""
        await self._transport.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
