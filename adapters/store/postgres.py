"""PostgreSQL recorder: eventsourcing's, made append-only by triggers.

Its tables are created at start-up under the schema's DDL lock, and only when missing
(see ``tierlog.adapters.store.pg_locks`` for the lock order every transaction keeps).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.sql import SQL, Identifier

from tierlog.adapters.store import pg_locks
from tierlog.adapters.store.cluster import complete_statement, create_statements, fence_statement
from tierlog.adapters.store.hash_chain import GENESIS, chain_row

APPEND_ONLY_MESSAGE = "tierlog: the event log is append-only"


class TierlogPostgresRecorder(PostgresApplicationRecorder):
    """Application recorder whose table refuses UPDATE, DELETE and TRUNCATE."""

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        schema = Identifier(self.datastore.schema)
        self.chain_table_name = self.events_table_name + "_chain"
        chain = Identifier(self.chain_table_name)
        function_name = f"{self.events_table_name}_append_only"
        function = Identifier(function_name)
        # What each of tierlog's create statements makes, by its index in the list.
        self._makes: dict[int, tuple[str, str]] = {
            len(self.sql_create_statements): ("relation", self.chain_table_name)
        }
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{chain} (first_position bigint PRIMARY KEY, "
                "last_position bigint NOT NULL, record_hashes bytea NOT NULL, "
                "chain_hash bytea NOT NULL)"
            ).format(schema=schema, chain=chain)
        )
        # By the key: the last row by first position is the last by last position.
        self._chain_head = SQL(
            "SELECT chain_hash FROM {schema}.{chain} ORDER BY first_position DESC LIMIT 1"
        ).format(schema=schema, chain=chain)
        self._insert_chain = SQL("INSERT INTO {schema}.{chain} VALUES (%s, %s, %s, %s)").format(
            schema=schema, chain=chain
        )
        self._insert_columns = SQL(
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::{id_type}[], %b::bigint[], %b::text[], %b::bytea[]) "
            "RETURNING notification_id"
        ).format(
            schema=schema,
            table=Identifier(self.events_table_name),
            id_type=Identifier(self.datastore.originator_id_type),
        )
        # The tables several nodes coordinate through (the lease, the inbox).
        for makes, statement in create_statements(self.datastore.schema):
            self._makes[len(self.sql_create_statements)] = makes
            self.sql_create_statements.append(statement)
        self._fence = fence_statement(self.datastore.schema)
        self._complete = complete_statement(self.datastore.schema)
        self._makes[len(self.sql_create_statements)] = ("function", function_name)
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{function}() RETURNS trigger "
                "LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION '{message}' USING ERRCODE = 'insufficient_privilege'; "
                "END $$"
            ).format(schema=schema, function=function, message=SQL(APPEND_ONLY_MESSAGE))
        )
        for table_name, kind, each in (
            (name, kind, each)
            for name in (self.events_table_name, self.chain_table_name)
            for kind, each in (
                ("update_delete", "FOR EACH ROW"),
                ("truncate", "FOR EACH STATEMENT"),
            )
        ):
            table = Identifier(table_name)
            events = "UPDATE OR DELETE" if kind == "update_delete" else "TRUNCATE"
            trigger = Identifier(f"{table_name}_no_{kind}")
            self._makes[len(self.sql_create_statements)] = ("trigger", f"{table_name}_no_{kind}")
            self.sql_create_statements.append(
                SQL(
                    "DO $$ BEGIN "
                    "CREATE TRIGGER {trigger} BEFORE {events} ON {schema}.{table} "
                    "{each} EXECUTE FUNCTION {schema}.{function}(); "
                    "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
                ).format(
                    trigger=trigger,
                    events=SQL(events),
                    schema=schema,
                    table=table,
                    each=SQL(each),
                    function=function,
                )
            )

    def _insert_stored_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        """The events, as eventsourcing inserts them (the table locked, the channel
        notified, ``RETURNING notification_id`` in insertion order), but with one array
        per column sent in binary (``%b``): eventsourcing's one array of a composite type is
        sent as text, escaped field by field in Python, which took a third of a
        PostgreSQL append (issue #17). Replaces the private hook eventsourcing 9.5
        calls here, as ``_insert_events`` and ``_fetch_ids_after_insert_events`` do."""
        self._lock_table(curs)
        self._notify_channel(curs)
        as_uuid = self.datastore.originator_id_type == "uuid"
        ids = [
            (e.originator_id if isinstance(e.originator_id, UUID) else UUID(e.originator_id))
            if as_uuid
            else str(e.originator_id)
            for e in stored_events
        ]
        curs.execute(
            self._insert_columns,
            (
                ids,
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ),
        )

    def _insert_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        """First in the append transaction: a leader's fence (``fence=(node, epoch)``)
        refuses the append unless that node still holds the lease (see ``cluster``)."""
        fence = kwargs.get("fence")
        if fence is not None:
            curs.execute(self._fence, fence)

    def complete_inbox(
        self, fence: tuple[str, int] | None, results: Sequence[tuple[int, bytes]], position: int
    ) -> None:
        """Answer forwarded commands that appended nothing, fenced like an append."""
        with self.datastore.transaction(commit=True) as curs:
            if fence is not None:
                curs.execute(self._fence, fence)
            curs.execute(self._complete, _inbox_arguments(results, position))

    def creates(self) -> list[tuple[tuple[str, str] | None, Any]]:
        """Each create statement with the ``(kind, name)`` of the object it makes (as
        ``pg_locks.catalog`` names it; None for one not recognised, which is then
        always run), types first: the insert function takes an array of the type."""
        made: list[tuple[tuple[str, str] | None, Any]] = []
        for index, statement in enumerate(self.sql_create_statements):
            text = statement.as_string()
            if index in self._makes:
                makes: tuple[str, str] | None = self._makes[index]
            elif "CREATE TYPE" in text:
                makes = ("type", self.stored_event_type_name)
            elif index == self.create_table_statement_index:
                makes = ("relation", self.events_table_name)
            elif "CREATE UNIQUE INDEX" in text:
                makes = ("relation", self.notification_id_index_name)
            elif index == self.create_insert_function_statement_index:
                makes = ("function", self.pg_function_name_insert_events)
            else:
                makes = None
            made.append((makes, statement))
        return sorted(made, key=lambda item: item[0] is None or item[0][0] != "type")

    def _missing(self, curs: Any) -> list[Any]:
        """The create statements whose objects are not in the schema (in order)."""
        present = pg_locks.catalog(curs, self.datastore.schema)
        return [statement for makes, statement in self.creates() if makes not in present]

    def create_table(self) -> None:
        """Create what of the log is missing: nothing (and no lock) when it is all
        there, else in one transaction under the schema's DDL lock, which serialises
        nodes starting together; appends are only waited for (the lock order is
        ``pg_locks``'s). Replaces eventsourcing's, which runs every statement each
        start, and those lock the events table (``CREATE INDEX IF NOT EXISTS`` takes a
        SHARE lock even when the index exists) beside running nodes' appends."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            missing = self._missing(curs)
        if missing:
            with self.datastore.transaction(commit=True) as curs:
                pg_locks.lock_for(curs, pg_locks.DDL, self.datastore.schema)
                curs.execute(
                    SQL("SET LOCAL lock_timeout = '{}s'").format(self.datastore.lock_timeout)
                )
                for statement in self._missing(curs):
                    curs.execute(statement, prepare=False)
        self.datastore.register_type_adapters()

    def _fetch_ids_after_insert_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The new positions; and the chain row for them, in the same transaction.

        The events table is locked EXCLUSIVE for this transaction (eventsourcing takes
        the lock to keep positions in commit order), so the chain stays linear.
        """
        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        if not ids:
            return ids
        curs.execute(self._chain_head)
        head = curs.fetchone()
        row = chain_row(
            bytes(head["chain_hash"]) if head else GENESIS,
            list(ids),
            [
                (
                    (
                        e.originator_id
                        if isinstance(e.originator_id, UUID)
                        else UUID(e.originator_id)
                    ).bytes,
                    e.originator_version,
                    e.topic,
                    e.state,
                )
                for e in stored_events
            ],
        )
        curs.execute(
            self._insert_chain,
            (row.first_position, row.last_position, row.record_hashes, row.chain_hash),
        )
        inbox = kwargs.get("inbox")
        if inbox:
            # The forwarded commands' answers commit with their events, or not at all.
            curs.execute(self._complete, _inbox_arguments(inbox, ids[-1]))
        return ids


def _inbox_arguments(
    results: Sequence[tuple[int, bytes]], position: int
) -> tuple[list[int], list[bytes], int]:
    return [i for i, _ in results], [r for _, r in results], position
