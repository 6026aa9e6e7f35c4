"""Read-model rows held in memory for one transaction.

Projections fold events into rows, lists of values in column order
(``projections.base.Rows``). During a batch the runner backs them with this cache: a
row is loaded from the read store the first time a projection asks for it, changed in
place as often as the batch says, and every changed row is written back once, by
``flush``, with one ``executemany`` upsert per table (and one delete per table for the
rows the batch removed). Counters are never loaded: what a batch adds to each is summed
in memory and added in SQL, one statement per table.
That turns "a few SQL statements per event" into "one row write per touched row per
batch", on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import islice
from typing import Any, Protocol

from tierlog.projections.base import Key, Row, Table


class ReadModelWriter(Protocol):
    """The statements the cache runs inside a read-store transaction (``?`` placeholders)."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement."""
        ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each parameter row."""
        ...

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """Run a query and return its first row."""
        ...


# Marks a key this cache has not looked up yet (None means "looked up: no such row").
_UNSEEN: Row = []


@lru_cache(maxsize=64)
def _select_sql(table: Table) -> str:
    where = " AND ".join(f"{name} = ?" for name in table.key)
    return f"SELECT {', '.join(table.column_names)} FROM {table.name} WHERE {where}"


@lru_cache(maxsize=64)
def _delete_sql(table: Table) -> str:
    where = " AND ".join(f"{name} = ?" for name in table.key)
    return f"DELETE FROM {table.name} WHERE {where}"


@lru_cache(maxsize=64)
def upsert_sql(table: Table) -> str:
    """One statement that inserts a whole row or replaces the row with its key."""
    others = [name for name in table.column_names if name not in table.key]
    sets = ", ".join(f"{name} = excluded.{name}" for name in others)
    return (
        f"INSERT INTO {table.name} ({', '.join(table.column_names)})"
        f" VALUES ({', '.join('?' for _ in table.column_names)})"
        f" ON CONFLICT ({', '.join(table.key)}) DO UPDATE SET {sets}"
    )


@lru_cache(maxsize=64)
def add_sql(table: Table) -> str:
    """One statement that adds to a counter row's value, or inserts the row."""
    value = table.column_names[-1]
    if table.column_names[:-1] != table.key:
        raise ValueError(f"{table.name} is not a counter table (its key, then one value)")
    return (
        f"INSERT INTO {table.name} ({', '.join(table.column_names)})"
        f" VALUES ({', '.join('?' for _ in table.column_names)})"
        f" ON CONFLICT ({', '.join(table.key)})"
        f" DO UPDATE SET {value} = {table.name}.{value} + excluded.{value}"
    )


class _TableRows:
    """One table's rows in the cache: every row looked up (None: none with that key),
    the changed ones, the removed keys, what was added to counters."""

    __slots__ = ("added", "deleted", "dirty", "rows", "select", "table")

    def __init__(self, table: Table, rows: dict[Key, Row | None] | None = None) -> None:
        self.table = table
        # Looked up once: hashing a ``Table`` (every column's declaration) for the
        # statement cache on each load cost more than the load's own query.
        self.select = _select_sql(table)
        self.rows: dict[Key, Row | None] = {} if rows is None else rows
        self.dirty: dict[Key, Row] = {}
        self.deleted: set[Key] = set()
        self.added: dict[Key, int] = {}


KeptRows = dict[str, dict[Key, Row | None]]
"""Rows as the read store holds them, by table name, kept from one batch to the next."""


class RowCache:
    """``Rows`` over a read store: loads on first use, writes changed rows on ``flush``.

    Given ``kept`` rows (each exactly as the store holds it, or None for a key it has
    no row for) it starts from them and leaves every row it loads or changes there: the
    caller keeps them for its next batch only once this one committed, and drops them
    all if it did not, or if another writer may have changed the store since.
    """

    def __init__(
        self, tables: Iterable[Table], db: ReadModelWriter, kept: KeptRows | None = None
    ) -> None:
        self._db = db
        # By table name: a name hashes at once, a ``Table`` (a dataclass) field by field.
        self._tables: dict[str, _TableRows] = {}
        for table in tables:
            rows = None if kept is None else kept.setdefault(table.name, {})
            self._tables[table.name] = _TableRows(table, rows)

    def get(self, table: Table, key: Key) -> Row | None:
        """The row with ``key`` (from memory, else from the store), or None."""
        cached = self._tables[table.name]
        row = cached.rows.get(key, _UNSEEN)
        return self._load(cached, key) if row is _UNSEEN else row

    def _load(self, cached: _TableRows, key: Key) -> Row | None:
        found = self._db.fetchone(cached.select, key)
        row = None if found is None else list(found)
        cached.rows[key] = row
        return row

    def put(self, table: Table, row: Row) -> None:
        """Insert ``row`` or replace the row with its key."""
        cached = self._tables[table.name]
        key = table.key_of(row)
        cached.rows[key] = row
        cached.dirty[key] = row
        if cached.deleted:
            cached.deleted.discard(key)

    def change(self, table: Table, key: Key) -> Row | None:
        """The row with ``key`` to change in place (written at ``flush``), or None."""
        cached = self._tables[table.name]
        row = cached.rows.get(key, _UNSEEN)
        if row is _UNSEEN:
            row = self._load(cached, key)
        if row is not None:
            cached.dirty[key] = row
        return row

    def add(self, table: Table, key: Key, by: int) -> None:
        """Add ``by`` to the counter row with ``key`` (at ``flush``, in SQL)."""
        added = self._tables[table.name].added
        added[key] = added.get(key, 0) + by

    def delete(self, table: Table, key: Key) -> None:
        """Remove the row with ``key`` (from the store at ``flush``)."""
        cached = self._tables[table.name]
        cached.rows[key] = None
        cached.dirty.pop(key, None)
        cached.deleted.add(key)

    def flush(self) -> int:
        """Write every changed row back (one upsert per table) and delete the removed
        ones (one delete per table); returns rows written or deleted."""
        written = 0
        for cached in self._tables.values():
            deleted = cached.deleted
            if not deleted:
                continue
            self._db.executemany(_delete_sql(cached.table), list(deleted))
            written += len(deleted)
            deleted.clear()
        for cached in self._tables.values():
            dirty = cached.dirty
            if not dirty:
                continue
            table = cached.table
            self._db.executemany(upsert_sql(table), list(dirty.values()))
            written += len(dirty)
            dirty.clear()
        for cached in self._tables.values():
            added = cached.added
            if not added:
                continue
            self._db.executemany(add_sql(cached.table), [(*key, by) for key, by in added.items()])
            written += len(added)
            added.clear()
        return written


def trim(kept: KeptRows, most: int) -> None:
    """Forget the rows of each table in ``kept`` beyond the ``most`` first looked up
    last (in the order they came: a row forgotten is only read from the store again)."""
    for rows in kept.values():
        excess = len(rows) - most
        if excess > 0:
            for key in list(islice(rows, excess)):
                del rows[key]
