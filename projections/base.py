"""What every read model is: typed tables, and a pure fold of events into their rows.

A projection never touches a connection. It reads and writes rows through ``Rows``:
a row is a list of the table's values in column order, changed in place. The runner
backs ``Rows`` with a cache that loads rows from the read store on first use and
writes each changed row once per batch, in the transaction that also records the log
position reached, so a crash keeps a whole batch or none of it. The audit folds the
same code into memory and compares.

The contract is cheap to fold (issue #16): times are integer epoch microseconds, task
ids their 16 bytes, enumerations small integer codes, counters integers added to in
SQL. Each column declares its ``Kind``, which says how the read side turns the stored
value into what the HTTP answers show (ISO times, UUID text, names, JSON objects): that
formatting is paid per row served, not per event folded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

import msgspec

from tierlog.domain.events import DomainEvent

_encoder = msgspec.json.Encoder()
_decode_json = msgspec.json.decode

Row = list[Any]
"""A row: the table's values in column order (``Table.index`` names the places)."""
Key = tuple[Any, ...]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_json(value: Any) -> str:
    """JSON text for a column (structs, tuples, datetimes included)."""
    return _encoder.encode(value).decode()


# One-entry caches: the runner hands one event to every projection in turn, and each
# converts the same timestamp and id; the events of one commit share their time, and a
# task's events often follow one another. A tuple is swapped in whole, so threads
# sharing these never see a value paired with another's conversion.
_last_time: tuple[Any, str] = (None, "")
_last_micros: tuple[Any, int] = (None, 0)
_last_id: tuple[Any, bytes] = (None, b"")


def iso(value: Any) -> str | None:
    """ISO 8601 text for a time kept as the event gave it (its zone included), or None."""
    global _last_time
    if value is None:
        return None
    last = _last_time
    seen = last[0]
    if seen is value or (seen is not None and seen.tzinfo is value.tzinfo and seen == value):
        return last[1]
    text = str(value.isoformat())
    _last_time = (value, text)
    return text


def micros(value: datetime) -> int:
    """A time column's value: microseconds since the epoch (exact; no float on the way)."""
    global _last_micros
    last = _last_micros
    seen = last[0]
    if seen is value or (seen is not None and seen == value):
        return last[1]
    count = (value - EPOCH) // _MICROSECOND
    _last_micros = (value, count)
    return count


def micros_or_none(value: datetime | None) -> int | None:
    """``micros`` of a time that may be missing."""
    return None if value is None else micros(value)


def id_bytes(value: UUID) -> bytes:
    """A task id column's value: the id's 16 bytes (cached for the event at hand)."""
    global _last_id
    last = _last_id
    seen = last[0]
    if seen is value or (seen is not None and seen.int == value.int):
        return last[1]
    data = value.bytes
    _last_id = (value, data)
    return data


def time_text(value: int | None) -> str | None:
    """The ISO 8601 text (UTC) of a time column's value."""
    return None if value is None else (EPOCH + timedelta(microseconds=value)).isoformat()


def id_text(value: bytes | None) -> str | None:
    """The text of a task id column's value."""
    return None if value is None else str(UUID(bytes=bytes(value)))


def json_value(value: Any) -> Any:
    """A JSON column's value, decoded."""
    return _decode_json(value) if isinstance(value, str | bytes) else value


@dataclass(frozen=True)
class Codes:
    """An enumeration stored as small integers: ``code[name]`` and ``names[code]``."""

    names: tuple[str, ...]
    code: Mapping[str, int] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "code", {name: i for i, name in enumerate(self.names)})

    def name(self, value: int | None) -> str | None:
        """The name stored as ``value``."""
        return None if value is None else self.names[value]


STATES = Codes(("queued", "assigned", "completed", "dead_lettered", "cancelled"))
"""A task's state."""
TIERS = Codes(("trivial", "standard", "complex"))
"""A routing tier."""
PRIORITIES = Codes(("urgent", "high", "normal", "low"))
"""A task's priority; its code is its rank in the queue."""
STATUSES = Codes(("idle", "busy", "offline", "unknown", "healthy", "unhealthy", "deregistered"))
"""An agent's or an endpoint's status (one list for both: a column name has one kind)."""
OUTCOMES = Codes(("started", "fired", "cancelled"))
"""What became of a fallback timer."""


@dataclass(frozen=True)
class Kind:
    """How a column's stored value reads in an answer (``read``: None stays None)."""

    name: str
    read: Callable[[Any], Any] | None = None


PLAIN = Kind("plain")
ID = Kind("id", id_text)
TIME = Kind("time", time_text)
JSON = Kind("json", json_value)
STATE = Kind("state", STATES.name)
TIER = Kind("tier", TIERS.name)
PRIORITY = Kind("priority", PRIORITIES.name)
STATUS = Kind("status", STATUSES.name)
OUTCOME = Kind("outcome", OUTCOMES.name)


Column = tuple[str, str] | tuple[str, str, Kind]
"""A column: its name, its SQL type, and its ``Kind`` (``PLAIN`` when left out)."""


@dataclass(frozen=True)
class Table:
    """A read-model table: its columns (name, SQL type, kind) in order, key and indexes.

    The key columns come first, so a row's key is its first values."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    indexes: tuple[str, ...] = ()
    column_names: tuple[str, ...] = field(init=False)
    kinds: tuple[Kind, ...] = field(init=False)

    def __post_init__(self) -> None:
        names = tuple(column[0] for column in self.columns)
        if names[: len(self.key)] != self.key:
            raise ValueError(f"{self.name}: the key columns must come first")
        object.__setattr__(self, "column_names", names)
        object.__setattr__(
            self, "kinds", tuple(column[2] if len(column) > 2 else PLAIN for column in self.columns)
        )

    @property
    def ddl(self) -> tuple[str, ...]:
        """The statements that create the table and its indexes (idempotent)."""
        columns = ", ".join(f"{column[0]} {column[1]}" for column in self.columns)
        create = (
            f"CREATE TABLE IF NOT EXISTS {self.name} ({columns},"
            f" PRIMARY KEY ({', '.join(self.key)}))"
        )
        return (create, *self.indexes)

    def index(self, column: str) -> int:
        """Where ``column`` sits in a row."""
        return self.column_names.index(column)

    def key_of(self, row: Sequence[Any]) -> Key:
        """The primary key of ``row``."""
        return tuple(row[: len(self.key)])


class Rows(Protocol):
    """The rows a projection reads and writes (one fold's view of its tables)."""

    def get(self, table: Table, key: Key) -> Row | None:
        """The row with ``key``, or None, to read (change it through ``change``)."""
        ...

    def put(self, table: Table, row: Row) -> None:
        """Insert ``row``, replacing any row with its key."""
        ...

    def change(self, table: Table, key: Key) -> Row | None:
        """The row with ``key``, to change in place (it is written back), or None."""
        ...

    def delete(self, table: Table, key: Key) -> None:
        """Remove the row with ``key``; nothing when there is no such row."""
        ...

    def add(self, table: Table, key: Key, by: int) -> None:
        """Add ``by`` to the last column of the row with ``key`` (a row ``key + [by]``
        when there is none). Only for counter tables (the key, then one integer), whose
        rows are only ever added to: the sum does not depend on how events are batched."""
        ...


# How one event type changes a projection's rows: (rows, position, event).
Handler = Callable[[Rows, int, Any], None]


class Projection(Protocol):
    """A read model: its name, its tables, and how each type of event changes their rows.

    A projection may also declare ``version`` (an int; ``fold_version`` reads it, 1 when
    absent). Bump it whenever the fold changes what rows it leaves: the runner then drops
    that read model's tables and folds the log into them again from position 0, so rows
    an older fold left behind do not stay for ever. A new index alone needs no
    bump (start-up creates a missing index); a new column does, as an existing table
    keeps the columns it was created with.
    """

    name: str
    tables: Sequence[Table]

    def handlers_for(self, event_type: type) -> Sequence[Handler]:
        """What folds an event of ``event_type`` into the rows, in order (none: the
        projection ignores that type). Asked once per type and fold, so the answer
        must not change."""
        ...


# The version of every fold written before folds had versions.
FIRST_VERSION = 1


def fold_version(projection: Projection) -> int:
    """The version of ``projection``'s fold: its ``version``, or ``FIRST_VERSION``."""
    version = getattr(projection, "version", FIRST_VERSION)
    return version if isinstance(version, int) else FIRST_VERSION


def handlers_from(table: Mapping[type, Handler], event_type: type) -> tuple[Handler, ...]:
    """``handlers_for`` of a projection with one handler per type it folds."""
    handler = table.get(event_type)
    return () if handler is None else (handler,)


# Past every position a store can hold (positions are BIGINT).
_NO_END = (1 << 63) - 1


class Fold:
    """Folds events into several projections, each over its own window of positions
    (``after < position <= upto``): what the live runner and the audit both run.

    Events go one at a time to every projection in turn, so they share the event's
    converted id and time (``id_bytes``, ``micros``). The handlers of each event type are
    looked up once; a type nothing handles costs one dict lookup per event.
    """

    def __init__(self, windows: Sequence[tuple[Projection, int, int | None]]) -> None:
        self._windows = [
            (p, after, upto if upto is not None else _NO_END) for p, after, upto in windows
        ]
        self._by_type: dict[type, list[tuple[Handler, int, int]]] = {}

    def handles(self, event_type: type) -> bool:
        """Whether any projection folds events of ``event_type``."""
        return bool(self._handlers(event_type))

    def _handlers(self, event_type: type) -> list[tuple[Handler, int, int]]:
        found = self._by_type.get(event_type)
        if found is None:
            found = self._by_type[event_type] = [
                (handler, after, upto)
                for projection, after, upto in self._windows
                for handler in projection.handlers_for(event_type)
            ]
        return found

    def apply(self, rows: Rows, events: Sequence[tuple[int, DomainEvent]]) -> None:
        """Fold ``(position, event)`` pairs, in log order."""
        by_type, learn = self._by_type, self._handlers
        for position, event in events:
            handlers = by_type.get(type(event))
            if handlers is None:
                handlers = learn(type(event))
            for handler, after, upto in handlers:
                if after < position <= upto:
                    handler(rows, position, event)
