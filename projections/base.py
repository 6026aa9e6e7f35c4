"""What every read model is: tables, and a fold of events into them.

A projection never opens a connection: the runner hands it a ``ReadModelWriter``
inside the transaction that also records the log position it has reached, so a
crash either keeps a whole batch or none of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from domain.events import DomainEvent

_encoder = msgspec.json.Encoder()


def to_json(value: Any) -> str:
    """JSON text for a column (structs, tuples, datetimes included)."""
    return _encoder.encode(value).decode()


def iso(value: Any) -> str | None:
    """ISO 8601 text for a datetime column, or None."""
    return None if value is None else str(value.isoformat())


class ReadModelWriter(Protocol):
    """The statements a projection may run (``?`` placeholders on every store)."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement."""
        ...

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """Run a query and return its first row."""
        ...


class Projection(Protocol):
    """A read model: its name, its tables, and how an event changes them."""

    name: str
    tables: Sequence[str]
    ddl: Sequence[str]

    def apply(self, db: ReadModelWriter, position: int, event: DomainEvent) -> None:
        """Fold one event, recorded at ``position``, into the tables."""
        ...
