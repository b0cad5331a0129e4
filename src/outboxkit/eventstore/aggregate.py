"""Aggregates: rebuild one from its stream, record new events, save them with optimistic
concurrency; snapshots every N events; upcasting of old event versions.

Plain classes, no metaclass: an aggregate subclasses :class:`Aggregate` and writes ``apply``
(usually a ``match`` on the event's class); events are dataclasses registered in an
:class:`EventTypes` under a stable name and a schema version. An event stored at an older version
is upcast (dict to dict, one version at a time) when it is read; history is never rewritten.

>>> @dataclass(frozen=True)
... class Placed:
...     total: int
>>> class Order(Aggregate):
...     def __init__(self, id: str) -> None:
...         super().__init__(id)
...         self.total = 0
...     def apply(self, event: object) -> None:
...         match event:
...             case Placed(total=total):
...                 self.total = total
>>> types = EventTypes().register(Placed, "OrderPlaced")
>>> order = Order("order-1"); order.record(Placed(30)); order.total
30
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from outboxkit.eventstore import plans
from outboxkit.eventstore.connection import async_runner, run_async, run_sync, sync_runner
from outboxkit.eventstore.model import AppendResult, NewEvent, RecordedEvent
from outboxkit.eventstore.store import EventStore

#: The header that carries an event's schema version (absent means 1).
VERSION_HEADER = "eventversion"

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class UnknownEventError(LookupError):
    """A stored event's type is not registered in the aggregate's :class:`EventTypes`."""


@dataclass(frozen=True)
class _Registered:
    cls: type
    name: str
    version: int
    upcasters: Mapping[int, Upcaster]


class EventTypes:
    """Event classes by stable name, with their schema version and the upcasters that bring an
    older version's data to the current one (``{1: v1_to_v2, 2: v2_to_v3}``)."""

    def __init__(self) -> None:
        self._by_name: dict[str, _Registered] = {}
        self._by_class: dict[type, _Registered] = {}

    def register(
        self, cls: type, name: str | None = None, *, version: int = 1, upcasters: Mapping[int, Upcaster] | None = None
    ) -> EventTypes:
        name = name or cls.__name__
        upcasters = dict(upcasters or {})
        missing = [v for v in range(1, version) if v not in upcasters]
        if missing and upcasters:
            raise ValueError(f"{name}: no upcaster from version {missing[0]} (versions 1..{version - 1} need one)")
        if name in self._by_name or cls in self._by_class:
            raise ValueError(f"event type {name!r} ({cls.__name__}) is registered twice")
        entry = _Registered(cls, name, version, upcasters)
        self._by_name[name] = entry
        self._by_class[cls] = entry
        return self

    def encode(self, event: object) -> NewEvent:
        entry = self._by_class.get(type(event))
        if entry is None:
            raise UnknownEventError(
                f"{type(event).__name__} is not registered: EventTypes().register({type(event).__name__})"
            )
        if hasattr(event, "to_dict"):
            data = event.to_dict()
        elif dataclasses.is_dataclass(event) and not isinstance(event, type):
            data = dataclasses.asdict(event)
        else:
            raise TypeError(f"{type(event).__name__}: use a dataclass or give it to_dict()/from_dict()")
        return NewEvent(entry.name, data, {VERSION_HEADER: str(entry.version)})

    def decode(self, event: RecordedEvent) -> object:
        entry = self._by_name.get(event.type)
        if entry is None:
            raise UnknownEventError(f"stream {event.stream_id!r} version {event.version}: unknown type {event.type!r}")
        data = event.json()
        stored = int(event.headers.get(VERSION_HEADER, "1"))
        for version in range(stored, entry.version):  # upcast one version at a time, oldest first
            upcast = entry.upcasters.get(version)
            if upcast is None:
                raise UnknownEventError(f"{entry.name}: no upcaster from version {version}")
            data = upcast(data)
        from_dict = getattr(entry.cls, "from_dict", None)
        return from_dict(data) if from_dict is not None else entry.cls(**data)


class Aggregate:
    """Base of an aggregate: ``id``, ``version`` (events applied) and events recorded, not yet saved.

    Override :meth:`apply`; call :meth:`record` from command methods. For snapshots, state is the
    public attributes (JSON); override :meth:`snapshot_state` / :meth:`restore` for other state, and
    bump ``snapshot_kind`` when its shape changes (older snapshots are then ignored).
    """

    snapshot_kind = "1"

    def __init__(self, id: str) -> None:
        self.id = id
        self.version = 0
        self._pending: list[object] = []

    def apply(self, event: object) -> None:
        """Change state by one event. Never fails for a stored event (it happened)."""
        raise NotImplementedError(f"{type(self).__name__}.apply")

    def record(self, event: object) -> None:
        """Apply a new event and keep it for the next save."""
        self.apply(event)
        self._pending.append(event)

    @property
    def pending(self) -> tuple[object, ...]:
        return tuple(self._pending)

    def snapshot_state(self) -> Any:
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in ("id", "version")}

    def restore(self, state: Any) -> None:
        for name, value in state.items():
            setattr(self, name, value)


A = TypeVar("A", bound=Aggregate)


class Repository(Generic[A]):
    """Loads and saves one kind of aggregate in an :class:`EventStore`.

    ``snapshot_every=N`` stores the aggregate's state, in the saving transaction, each time its
    version crosses a multiple of N; loading then reads the snapshot and the events after it.
    """

    def __init__(
        self, store: EventStore, factory: Callable[[str], A], types: EventTypes, *, snapshot_every: int | None = None
    ) -> None:
        if snapshot_every is not None and snapshot_every < 1:
            raise ValueError("snapshot_every must be >= 1")
        self.store = store
        self.factory = factory
        self.types = types
        self.snapshot_every = snapshot_every

    def load(self, conn: Any, stream_id: str) -> A:
        """The aggregate as of its last event (version 0 and fresh state if the stream is empty)."""
        dialect, run = sync_runner(conn, write=False)
        return run_sync(self._load(dialect, stream_id), run)

    def save(self, conn: Any, aggregate: A) -> AppendResult | None:
        """Append the recorded events at the version the aggregate was loaded at, in ``conn``'s
        transaction; ConcurrencyError if another writer saved first. None when nothing to save."""
        if not aggregate.pending:
            return None
        encoded = self._encoded(aggregate)
        dialect, run = sync_runner(conn, write=True)
        return run_sync(self._save(dialect, aggregate, encoded), run)

    async def load_async(self, conn: Any, stream_id: str) -> A:
        dialect, run = await async_runner(conn, write=False)
        return await run_async(self._load(dialect, stream_id), run)

    async def save_async(self, conn: Any, aggregate: A) -> AppendResult | None:
        if not aggregate.pending:
            return None
        encoded = self._encoded(aggregate)
        dialect, run = await async_runner(conn, write=True)
        return await run_async(self._save(dialect, aggregate, encoded), run)

    # -- plans (no I/O) ----------------------------------------------------------------------------
    def _encoded(self, aggregate: A) -> list[plans.Encoded]:
        return self.store._encode(aggregate.id, [self.types.encode(e) for e in aggregate.pending])

    def _load(self, dialect: str, stream_id: str) -> Generator[plans.Query, plans.Rows, A]:
        st = self.store.statements(dialect)
        aggregate = self.factory(stream_id)
        if self.snapshot_every is not None:
            found = yield plans.Query(st.snapshot_get, (stream_id,))
            if found and found[0][1] == aggregate.snapshot_kind:
                aggregate.restore(json.loads(bytes(found[0][2])))
                aggregate.version = int(found[0][0])
        events = yield from plans.read(st.read_forward, (stream_id, aggregate.version + 1, 2**62))
        for event in events:
            aggregate.apply(self.types.decode(event))
            aggregate.version = event.version
        return aggregate

    def _save(
        self, dialect: str, aggregate: A, encoded: list[plans.Encoded]
    ) -> Generator[plans.Query, plans.Rows, AppendResult]:
        st = self.store.statements(dialect)
        before = aggregate.version
        result = yield from plans.append(st, aggregate.id, encoded, before)
        aggregate.version = result.version
        aggregate._pending.clear()
        every = self.snapshot_every
        if every is not None and result.version // every > before // every:
            state = json.dumps(aggregate.snapshot_state(), separators=(",", ":")).encode()
            yield plans.Query(st.snapshot_put, (aggregate.id, result.version, aggregate.snapshot_kind, state))
        return result
