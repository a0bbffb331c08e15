"""The daemon's link watch: one task turns the kernel's link announcements (and, while a CAN
controller is watched, a poll of its state) into events for every watching connection.

The task runs only while someone watches: the first watcher opens the backend's monitor
and takes the list of links as the starting point, synchronously, before its WATCH is
answered (so no change after the answer is missed); the last one to leave closes it.

The kernel announces a CAN controller's bus-off and restart, but not its error-warning or
error-passive state: while a watcher's names include a CAN controller (or it watches every
link and one exists), the links are listed every :data:`~hycan._events.POLL_INTERVAL`
seconds and the state changes found become events too.
"""

from __future__ import annotations

import logging
import math

import trio

from hycan._events import POLL_INTERVAL, EventQueue, LinkEvent, LinkTracker
from hycan.backends.base import Backend, LinkMonitor

log = logging.getLogger("hycan.daemon")


class Watcher:
    """One watching connection: its bounded queue, and a way to wait for it to fill."""

    def __init__(self, names: frozenset[str] | None) -> None:
        self.queue = EventQueue(names)
        self._ready = trio.Event()
        self.ended = False

    def offer(self, event: LinkEvent) -> None:
        """Queue ``event`` if this watcher wants it, and wake it."""
        if self.queue.offer(event):
            self._ready.set()

    def end(self) -> None:
        """No more events will come (the watch failed): wake the watcher to close."""
        self.ended = True
        self._ready.set()

    async def events(self) -> list[LinkEvent] | None:
        """Wait until there are events, then take them all (a ``lost`` marker last);
        None once the watch has ended."""
        await self._ready.wait()
        if self.ended:
            return None
        self._ready = trio.Event()
        return self.queue.take()


class WatchHub:
    """Fans the link changes of the daemon's namespace out to the watchers."""

    def __init__(self, backend: Backend, poll_interval: float = POLL_INTERVAL) -> None:
        self._backend = backend
        self._poll_interval = poll_interval
        self._watchers: set[Watcher] = set()
        self._monitor: LinkMonitor | None = None
        self._scope: trio.CancelScope | None = None
        self._tracker = LinkTracker()

    @property
    def watchers(self) -> int:
        """How many connections watch now."""
        return len(self._watchers)

    def subscribe(self, names: frozenset[str] | None, nursery: trio.Nursery) -> Watcher:
        """A new watcher of ``names`` (None: every link); starts the hub's task in
        ``nursery`` if it is the first. Every change from now on reaches it."""
        if self._monitor is None:
            monitor = self._backend.monitor()
            try:
                self._tracker = LinkTracker(self._backend.links())
            except BaseException:
                monitor.close()
                raise
            self._monitor, self._scope = monitor, trio.CancelScope()
            nursery.start_soon(self._run, monitor, self._scope)
        watcher = Watcher(names)
        self._watchers.add(watcher)
        return watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        """Forget ``watcher``; the last one stops the hub's task."""
        self._watchers.discard(watcher)
        if not self._watchers:
            self._stop()

    def _stop(self) -> None:
        scope, self._scope = self._scope, None
        if scope is not None:
            scope.cancel()
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            trio.lowlevel.notify_closing(monitor.fileno())
            monitor.close()

    async def _run(self, monitor: LinkMonitor, scope: trio.CancelScope) -> None:
        with scope:
            try:
                while True:
                    polling = any(self._tracker.has_can(w.queue.names) for w in self._watchers)
                    with trio.move_on_after(self._poll_interval if polling else math.inf):
                        await trio.lowlevel.wait_readable(monitor.fileno())
                    self._publish(monitor, polling)
            except trio.ClosedResourceError:
                pass  # the last watcher left while this waited
            except Exception:
                log.exception("the link watch failed: its watchers are disconnected")
                for watcher in self._watchers:
                    watcher.end()
                self._watchers.clear()
                self._stop()

    def _publish(self, monitor: LinkMonitor, poll: bool) -> None:
        """Read what the kernel announced (and, for a poll, the list of links)."""
        changes = monitor.read()
        tracker = self._tracker
        events: list[LinkEvent] = []
        if changes is None:  # announcements were lost: compare with the whole list
            events = tracker.resync(self._backend.links())
        else:
            for status in changes:
                events += tracker.update(status)
            if poll:
                events += tracker.resync(self._backend.links())
        for event in events:
            for watcher in self._watchers:
                watcher.offer(event)
