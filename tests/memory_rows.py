"""Read-model rows in a dict, for the projection tests: a fold with no store behind it."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from tierlog.projections.base import ID, Key, Row, Table


class MemoryRows:
    """Rows in a dict: enough for a fold with no store behind it."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, Key], Row] = {}

    def get(self, table: Table, key: Key) -> Row | None:
        return self.rows.get((table.name, key))

    def put(self, table: Table, row: Row) -> None:
        self.rows[(table.name, table.key_of(row))] = row

    def change(self, table: Table, key: Key) -> Row | None:
        return self.rows.get((table.name, key))

    def delete(self, table: Table, key: Key) -> None:
        self.rows.pop((table.name, key), None)

    def add(self, table: Table, key: Key, by: int) -> None:
        row = self.rows.get((table.name, key))
        if row is None:
            self.rows[(table.name, key)] = [*key, by]
        else:
            row[-1] += by

    # --- as the answers show rows (ids as text, names, ISO times, JSON decoded) ------

    def keys(self, table: Table) -> set[Key]:
        """The keys of ``table``'s rows, as the answers show them."""
        return {
            tuple(_shown(table, i, v) for i, v in enumerate(key))
            for name, key in self.rows
            if name == table.name
        }

    def read(self, table: Table, key: Key) -> dict[str, Any] | None:
        """The row whose key the answers show as ``key`` (a task id as text), read as
        the answers show it; None when there is none."""
        stored = tuple(UUID(v).bytes if table.kinds[i] is ID else v for i, v in enumerate(key))
        row = self.rows.get((table.name, stored))
        return None if row is None else shown(table, row)

    def all_stored(self, table: Table) -> list[Row]:
        """Every row of ``table``, as stored (codes, bytes, microseconds)."""
        return [row for (name, _), row in self.rows.items() if name == table.name]

    def all(self, table: Table) -> list[dict[str, Any]]:
        """Every row of ``table``, as the answers show them."""
        return [shown(table, row) for (name, _), row in self.rows.items() if name == table.name]


def _shown(table: Table, i: int, value: Any) -> Any:
    read = table.kinds[i].read
    return value if read is None or value is None else read(value)


def shown(table: Table, row: Row) -> dict[str, Any]:
    """A stored row as the answers show it."""
    return {
        name: _shown(table, i, v)
        for i, (name, v) in enumerate(zip(table.column_names, row, strict=True))
    }
