"""What every read model is: tables, and a pure fold of events into their rows.

A projection never touches a connection. It reads and writes rows (plain dicts)
through ``Rows``; the runner backs ``Rows`` with a cache that loads rows from the
read store on first use and writes the changed ones back in the transaction that
also records the log position reached, so a crash keeps a whole batch or none of
it. The audit folds the same code into a scratch store and compares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

import msgspec

from domain.events import DomainEvent

_encoder = msgspec.json.Encoder()

Row = dict[str, Any]
Key = tuple[Any, ...]


def to_json(value: Any) -> str:
    """JSON text for a column (structs, tuples, datetimes included)."""
    return _encoder.encode(value).decode()


# One-entry caches keyed by identity: the runner hands one event to every projection in
# turn, and each formats the same timestamp and id. A tuple is swapped in whole, so
# threads sharing these never see a value paired with another's text.
_last_time: tuple[Any, str] = (None, "")
_last_id: tuple[Any, str] = (None, "")


def iso(value: Any) -> str | None:
    """ISO 8601 text for a datetime column, or None."""
    global _last_time
    if value is None:
        return None
    last = _last_time
    if last[0] is value:
        return last[1]
    text = str(value.isoformat())
    _last_time = (value, text)
    return text


def text_id(value: UUID) -> str:
    """The text form of an id column (``str(uuid)``, cached for the event at hand)."""
    global _last_id
    last = _last_id
    if last[0] is value:
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


class Projection(Protocol):
    """A read model: its name, its tables, and how an event changes their rows."""

    name: str
    tables: Sequence[Table]

    def apply(self, rows: Rows, position: int, event: DomainEvent) -> None:
        """Fold one event, recorded at ``position``, into the rows."""
        ...
