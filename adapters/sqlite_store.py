"""SQLite recorder: eventsourcing's, made append-only and given a batched insert."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteDatastore

APPEND_ONLY_MESSAGE = "tierlog: the event log is append-only"
Row = tuple[str, int, str, bytes]


class TierlogSQLiteRecorder(SQLiteApplicationRecorder):
    """Application recorder whose table refuses UPDATE and DELETE (triggers)."""

    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name)
        self._max_rowid = f"SELECT MAX(rowid) FROM {self.events_table_name}"

    def construct_create_table_statements(self) -> list[str]:
        """The events table plus triggers that abort any UPDATE or DELETE."""
        table = self.events_table_name
        statements = super().construct_create_table_statements()
        for action in ("UPDATE", "DELETE"):
            statements.append(
                f"CREATE TRIGGER IF NOT EXISTS {table}_no_{action.lower()} "
                f"BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"
            )
        return statements

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **_: Any
    ) -> Sequence[int] | None:
        rows = [
            (
                s.originator_id.hex if isinstance(s.originator_id, UUID) else s.originator_id,
                s.originator_version,
                s.topic,
                s.state,
            )
            for s in stored_events
        ]
        return self._insert_rows(c, rows)

    def insert_rows(self, rows: Sequence[Row]) -> list[int]:
        """Insert ready-made rows (id hex, version, topic, state) in one transaction.

        The append path's shortcut past ``StoredEvent`` objects; the same SQL, the
        same transaction and the same conflict errors as ``insert_events``.
        """
        with self.datastore.transaction(commit=True) as c:
            return self._insert_rows(c, rows)

    def _insert_rows(self, c: SQLiteCursor, rows: Sequence[Row]) -> list[int]:
        # One executemany instead of one execute per row. Rowids are max+1 each, and
        # this transaction holds the write lock, so the new ids are the last n.
        if not rows:
            return []
        c.executemany(self.insert_events_statement, rows)
        c.execute(self._max_rowid)
        last = int(c.fetchone()[0])
        return list(range(last - len(rows) + 1, last + 1))
