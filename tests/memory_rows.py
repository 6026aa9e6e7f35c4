"""Read-model rows in a dict, for the projection tests: a fold with no store behind it."""

from __future__ import annotations

from tierlog.projections.base import Key, Row, Table


class MemoryRows:
    """Rows in a dict: enough for a fold with no store behind it."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, Key], Row] = {}

    def get(self, table: Table, key: Key) -> Row | None:
        return self.rows.get((table.name, key))

    def put(self, table: Table, row: Row) -> None:
        self.rows[(table.name, table.key_of(row))] = row

    def update(self, table: Table, key: Key, changes: Row) -> Row | None:
        row = self.rows.get((table.name, key))
        if row is not None:
            row.update(changes)
        return row

    def delete(self, table: Table, key: Key) -> None:
        self.rows.pop((table.name, key), None)

    def keys(self, table: Table) -> set[Key]:
        return {key for name, key in self.rows if name == table.name}
