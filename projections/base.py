"""What every read model is: tables, and a pure fold of events into their rows.

A projection never touches a connection. It reads and writes rows (plain dicts)
through ``Rows``; the runner backs ``Rows`` with a cache that loads rows from the
read store on first use and writes the changed ones back in the transaction that
also records the log position reached, so a crash keeps a whole batch or none of
it. The audit folds the same code into a scratch store and compares.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

import msgspec

from tierlog.domain.events import DomainEvent

_encoder = msgspec.json.Encoder()

Row = dict[str, Any]
Key = tuple[Any, ...]


def to_json(value: Any) -> str:
    """JSON text for a column (structs, tuples, datetimes included)."""
    return _encoder.encode(value).decode()


# One-entry caches: the runner hands one event to every projection in turn, and each
# formats the same timestamp and id; the events of one commit share their time, and a
# task's events often follow one another. A value equal to the last one (a time in the
# same zone object, so the same local time and offset) has the same text. A tuple is
# swapped in whole, so threads sharing these never see a value paired with another's text.
_last_time: tuple[Any, str] = (None, "")
_last_id: tuple[Any, str] = (None, "")


def iso(value: Any) -> str | None:
    """ISO 8601 text for a datetime column, or None."""
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


def text_id(value: UUID) -> str:
    """The text form of an id column (``str(uuid)``, cached for the event at hand)."""
    global _last_id
    last = _last_id
    seen = last[0]
    if seen is value or (seen is not None and seen.int == value.int):
        return last[1]
    text = str(value)
    _last_id = (value, text)
    return text


@dataclass(frozen=True)
class Table:
    """A read-model table: its columns (name, SQL type) in order, key and indexes."""

    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    indexes: tuple[str, ...] = ()
    column_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "column_names", tuple(name for name, _ in self.columns))

    @property
    def ddl(self) -> tuple[str, ...]:
        """The statements that create the table and its indexes (idempotent)."""
        columns = ", ".join(f"{name} {sql_type}" for name, sql_type in self.columns)
        create = (
            f"CREATE TABLE IF NOT EXISTS {self.name} ({columns},"
            f" PRIMARY KEY ({', '.join(self.key)}))"
        )
        return (create, *self.indexes)

    def key_of(self, row: Row) -> Key:
        """The primary key of ``row``."""
        return tuple(row[name] for name in self.key)


class Rows(Protocol):
    """The rows a projection reads and writes (one fold's view of its tables)."""

    def get(self, table: Table, key: Key) -> Row | None:
        """The row with ``key``, or None. Change it only through ``put``/``update``."""
        ...

    def put(self, table: Table, row: Row) -> None:
        """Insert ``row``, replacing any row with its key."""
        ...

    def update(self, table: Table, key: Key, changes: Row) -> Row | None:
        """Change columns of the row with ``key``; nothing when there is no such row."""
        ...

    def delete(self, table: Table, key: Key) -> None:
        """Remove the row with ``key``; nothing when there is no such row."""
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
    formatted id and time (``iso``, ``text_id``). The handlers of each event type are
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
