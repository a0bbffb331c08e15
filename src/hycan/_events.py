"""Link events (WATCH), sans-IO: what changed between two states of a link, a watcher's
bounded queue, and the JSON each event travels as. Shared by the daemon and the clients.

The daemon keeps one :class:`LinkTracker` per watched namespace: each link status the
kernel announces (or the daemon polls, for CAN state) goes through :meth:`LinkTracker.update`,
which turns the difference to what it knew into events. Each watcher has a
:class:`EventQueue` of at most ``capacity`` events; what does not fit is counted, and the
watcher reads a single ``lost`` event in its place, so a watcher that does not read costs
the daemon a bounded amount of memory.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from typing import Any, NamedTuple

from hycan._names import name_problem
from hycan._status import COMPACT, FieldSpec, LinkStatus, check_fields, json_reply
from hycan.errors import InvalidArgument

EVENTS = ("added", "removed", "up", "down", "carrier", "renamed", "can_state", "lost")
MAX_WATCHED_NAMES = 64
QUEUE_CAPACITY = 256  # events a watcher may have unread before they are counted as lost
POLL_INTERVAL = 1.0  # seconds between CAN state polls, while a CAN link is watched
_NO_CARRIER = frozenset({"DOWN", "LOWERLAYERDOWN", "NOTPRESENT", "DORMANT"})


class LinkEvent(NamedTuple):
    """One change of a link, as ``watch()`` yields it. ``event`` is one of
    :data:`EVENTS`; ``lost`` events carry only ``lost``: how many events the daemon
    dropped because this watcher did not read them in time."""

    event: str
    name: str = ""
    ifindex: int | None = None  # JSON key "index"
    kind: str | None = None
    old_name: str | None = None  # "renamed": the name it had
    carrier: bool | None = None  # "carrier": whether it has one now
    state: str | None = None  # "can_state": the new CAN state, e.g. "ERROR-PASSIVE"
    old_state: str | None = None  # "can_state": the state before
    lost: int = 0  # "lost": how many events were dropped

    def to_json(self) -> str:
        """Compact JSON of the fields that are set (the event's message)."""
        data: dict[str, Any] = {}
        for key, value in self._asdict().items():
            if value is not None and not (key == "lost" and value == 0):
                data["index" if key == "ifindex" else key] = value
        return COMPACT.encode(data)

    @classmethod
    def from_json(cls, text: str) -> LinkEvent:
        """Parse an event message; anything malformed raises ``ProtocolError``. Unknown
        keys (from a newer daemon) are ignored; an unknown event is kept as it is."""
        data = json_reply("WATCH", text)
        check_fields("WATCH", data, _EVENT_FIELDS)
        return cls(
            data["event"],
            data.get("name") or "",
            data.get("index"),
            data.get("kind"),
            data.get("old_name"),
            data.get("carrier"),
            data.get("state"),
            data.get("old_state"),
            data.get("lost") or 0,
        )


_EVENT_FIELDS: FieldSpec = {
    "event": (str, True),
    "name": (str, False),
    "index": (int, False),
    "kind": (str, False),
    "old_name": (str, False),
    "carrier": (bool, False),
    "state": (str, False),
    "old_state": (str, False),
    "lost": (int, False),
}


class _Seen(NamedTuple):
    name: str
    kind: str | None
    up: bool
    carrier: bool
    can_state: str | None


def _seen(status: LinkStatus) -> _Seen:
    up = bool(status.up)
    carrier = up and status.operstate not in _NO_CARRIER
    state = status.can.get("state") if status.can else None
    return _Seen(status.name, status.kind, up, carrier, state)


class LinkTracker:
    """What the daemon last knew of each link of one namespace, by ifindex."""

    def __init__(self, links: Iterable[LinkStatus] = ()) -> None:
        self._known: dict[int, _Seen] = {}
        for status in links:
            if status.exists and status.ifindex is not None:
                self._known[status.ifindex] = _seen(status)

    def has_can(self, names: frozenset[str] | None) -> bool:
        """Whether a CAN controller (kind "can") is among ``names`` (None: any link)."""
        return any(
            seen.kind == "can" and (names is None or seen.name in names)
            for seen in self._known.values()
        )

    def update(self, status: LinkStatus) -> list[LinkEvent]:
        """The events that turn what was known of this link into ``status`` (a link that
        no longer exists: ``exists`` False, with its ifindex)."""
        index = status.ifindex
        if index is None:
            return []
        before = self._known.get(index)
        if not status.exists:
            if before is None:
                return []
            del self._known[index]
            return [LinkEvent("removed", before.name, index, before.kind)]
        now = self._known[index] = _seen(status)
        if before is None:
            return [LinkEvent("added", now.name, index, now.kind)]
        events = []
        if before.name != now.name:
            events.append(LinkEvent("renamed", now.name, index, now.kind, old_name=before.name))
        if before.up != now.up:
            events.append(LinkEvent("up" if now.up else "down", now.name, index, now.kind))
        elif now.up and before.carrier != now.carrier:
            events.append(LinkEvent("carrier", now.name, index, now.kind, carrier=now.carrier))
        if before.can_state != now.can_state and now.can_state is not None:
            events.append(
                LinkEvent(
                    "can_state",
                    now.name,
                    index,
                    now.kind,
                    state=now.can_state,
                    old_state=before.can_state,
                )
            )
        return events

    def resync(self, links: Iterable[LinkStatus]) -> list[LinkEvent]:
        """The events that turn what was known into this full list of the namespace's
        links (after notifications were lost, or for a poll)."""
        events: list[LinkEvent] = []
        present = set()
        for status in links:
            if status.ifindex is not None:
                present.add(status.ifindex)
                events += self.update(status)
        for index in [i for i in self._known if i not in present]:
            events += self.update(LinkStatus(self._known[index].name, False, ifindex=index))
        return events


class EventQueue:
    """One watcher's unread events: at most ``capacity``; beyond that they are counted and
    read as one ``lost`` event after the ones kept (so the order stays true)."""

    def __init__(self, names: frozenset[str] | None, capacity: int = QUEUE_CAPACITY) -> None:
        self.names = names
        self._capacity = capacity
        self._events: deque[LinkEvent] = deque()
        self._lost = 0

    def wants(self, event: LinkEvent) -> bool:
        """Whether this watcher asked for ``event``'s link (by name, either name of a
        rename)."""
        names = self.names
        return names is None or event.name in names or event.old_name in names

    def offer(self, event: LinkEvent) -> bool:
        """Queue ``event`` if it is wanted (or count it as lost); whether it was wanted."""
        if not self.wants(event):
            return False
        if len(self._events) < self._capacity and not self._lost:
            self._events.append(event)
        else:
            self._lost += 1
        return True

    def take(self) -> list[LinkEvent]:
        """Every unread event, oldest first, then a ``lost`` event if some were dropped."""
        events = list(self._events)
        self._events.clear()
        if self._lost:
            events.append(LinkEvent("lost", lost=self._lost))
            self._lost = 0
        return events


def watch_payload(names: Iterable[str]) -> bytes:
    """The WATCH payload for these link names (none: every link)."""
    wanted = list(names)
    return COMPACT.encode({"names": wanted}).encode() if wanted else b""


def watch_names(payload: bytes) -> frozenset[str] | None:
    """The names a WATCH payload asks for (None: every link); ``InvalidArgument`` if the
    payload is not ``{"names": [up to 64 valid link names]}`` or empty."""
    if not payload:
        return None
    from hycan._canconfig import json_object

    data = json_object(payload, "invalid WATCH payload")
    names = data.get("names")
    if set(data) != {"names"} or type(names) is not list:
        raise InvalidArgument('invalid WATCH payload: expected {"names": [link names]}')
    if len(names) > MAX_WATCHED_NAMES:
        raise InvalidArgument(
            f"invalid WATCH payload: at most {MAX_WATCHED_NAMES} names (watch every link with none)"
        )
    for name in names:
        problem = name_problem(name.encode("utf-8", "surrogatepass")) if type(name) is str else ""
        if problem is None:
            continue
        shown = json.dumps(name)[:40]
        raise InvalidArgument(f"invalid WATCH payload: {shown} is not a link name")
    return frozenset(names) or None
