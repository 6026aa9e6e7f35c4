"""Reads of single aggregates' streams by key, with their global positions: a part of
``EventLog`` kept in its own module. Both stores index the stream key (the primary key
``(originator_id, originator_version)``), so these are index lookups whatever the log's
length: what the scheduler uses to find records that left its memory."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any
from uuid import UUID

from tierlog.adapters.store.codec import EventCodec
from tierlog.domain.events import DomainEvent

PositionedEvent = tuple[int, DomainEvent]


class StreamReads:
    """The per-aggregate reads of ``EventLog`` (which provides the attributes below)."""

    recorder: Any
    env: dict[str, str]
    is_postgres: bool
    codec: EventCodec
    _faults: Callable[[], AbstractContextManager[None]]
    """Says a fault of the storage as ``StoreUnavailableError`` (``EventLog``'s)."""

    def positioned_events_of(self, aggregate_id: UUID) -> list[PositionedEvent]:
        """All events of one aggregate with their global positions, in order."""
        return self.streams_of([aggregate_id]).get(aggregate_id, [])

    def streams_of(
        self, aggregate_ids: Sequence[UUID], before: int | None = None
    ) -> dict[UUID, list[PositionedEvent]]:
        """The events of each aggregate (recorded before position ``before``, if given),
        with their positions, in version order, in one query; an aggregate with no event
        is absent."""
        if not aggregate_ids:
            return {}
        with self._faults():
            rows = self._stream_rows(aggregate_ids, before)
        streams: dict[UUID, list[PositionedEvent]] = {}
        decode = self.codec.decode
        for aggregate_id, position, topic, state in rows:
            event = decode(topic, bytes(state))
            streams.setdefault(aggregate_id, []).append((position, event))
        return streams

    def _stream_rows(
        self, aggregate_ids: Sequence[UUID], before: int | None
    ) -> list[tuple[UUID, int, str, bytes]]:
        limit = before if before is not None else 2**63 - 1
        rows: list[tuple[UUID, int, str, bytes]]
        if self.is_postgres:
            schema, table = self.env["POSTGRES_SCHEMA"], self.recorder.events_table_name
            sql = (
                f'SELECT originator_id, notification_id, topic, state FROM "{schema}"."{table}" '
                "WHERE originator_id = ANY(%s) AND notification_id < %s "
                "ORDER BY originator_id, originator_version"
            )
            with self.recorder.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(sql, (list(aggregate_ids), limit))
                rows = [
                    (UUID(str(r["originator_id"])), r["notification_id"], r["topic"], r["state"])
                    for r in curs.fetchall()
                ]
        else:
            marks = ",".join("?" * len(aggregate_ids))
            sql = (
                "SELECT originator_id, rowid, topic, state FROM stored_events "
                f"WHERE originator_id IN ({marks}) AND rowid < ? "
                "ORDER BY originator_id, originator_version"
            )
            with self.recorder.datastore.transaction(commit=False) as curs:
                curs.execute(sql, (*(i.hex for i in aggregate_ids), limit))
                rows = [(UUID(r[0]), r[1], r[2], r[3]) for r in curs.fetchall()]
        return rows
