"""Where read models live: a SQLite file beside the log, or the log's PostgreSQL schema.

Statements use ``?`` placeholders everywhere; on PostgreSQL they are rewritten once.
On PostgreSQL several nodes share the read models: their tables are created under the
schema's DDL lock and only when missing, and every transaction that writes rows takes
the schema's projections lock first (``tierlog.adapters.store.pg_locks`` has the order).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from tierlog.adapters.readside.formats import answer_row
from tierlog.adapters.store import pg_locks
from tierlog.adapters.store.event_log import EventLog, postgres_connect_args

# The row of rm_positions that holds a fingerprint of the log the models were built from.
IDENTITY_KEY = "__log_identity__"
POSITIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS rm_positions (name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
)
# The version of the fold (``projections.base.fold_version``) that wrote each read
# model's rows; no row: the first version, from before folds had versions.
FOLDS_DDL = "CREATE TABLE IF NOT EXISTS rm_folds (name TEXT PRIMARY KEY, version BIGINT NOT NULL)"


# The name a ``CREATE TABLE``/``CREATE INDEX`` statement gives what it makes.
_MAKES = re.compile(
    r"^\s*CREATE\s+(?:UNIQUE\s+)?(?:TABLE|INDEX)\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.I
)


@lru_cache(maxsize=512)
def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


def made_by(statement: str) -> str | None:
    """The table or index a ``CREATE TABLE``/``CREATE INDEX`` statement makes (None
    for any other statement)."""
    found = _MAKES.match(statement)
    return found.group(1) if found else None


def read_model_path(log_path: str) -> Path:
    """The read model file beside a SQLite log: ``tierlog.db`` → ``tierlog.read.db``."""
    path = Path(log_path)
    return path.with_name(f"{path.stem}.read{path.suffix or '.db'}")


class _SQLiteWriter:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cursor.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cursor.executemany(sql, rows)

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        self._cursor.execute(sql, params)
        row: tuple[Any, ...] | None = self._cursor.fetchone()
        return row


class _PostgresWriter:
    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cursor.execute(_pg(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cursor.executemany(_pg(sql), rows)

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        self._cursor.execute(_pg(sql), params)
        row: tuple[Any, ...] | None = self._cursor.fetchone()
        return row


class ReadStore:
    """A connection to the read models, with transactions and plain queries."""

    def __init__(
        self,
        log: EventLog,
        *,
        sqlite_path: Path | None = None,
        postgres_schema: str | None = None,
        scratch: bool = False,
    ) -> None:
        """Read models of ``log``: beside a SQLite log (at ``sqlite_path`` if given) or in
        the log's PostgreSQL schema (``postgres_schema`` if given, which must exist).
        A ``scratch`` copy (an audit's) is thrown away after use, so it skips fsync."""
        self.is_postgres = log.is_postgres
        self.schema = postgres_schema or log.env.get("POSTGRES_SCHEMA", "public")
        self.sqlite_path: Path | None = None
        self._scratch = scratch
        if log.sqlite_path is not None:
            self.sqlite_path = sqlite_path or read_model_path(log.sqlite_path)
            conn = sqlite3.connect(
                self.sqlite_path, isolation_level=None, check_same_thread=False, timeout=30
            )
            # A scratch copy is read by nobody while it is written, and thrown away
            # after: its journal can stay in memory and nothing needs an fsync.
            conn.execute(f"PRAGMA journal_mode={'MEMORY' if scratch else 'WAL'}")
            # Live read models sync the WAL at checkpoints, not at every commit: a
            # power cut may lose the last batches, never half of one, and their
            # positions go with them, so the runner folds those events again (the log
            # has them). A process that dies loses nothing (the WAL is written).
            conn.execute(f"PRAGMA synchronous={'OFF' if scratch else 'NORMAL'}")
            self._conn: Any = conn
        else:
            self._env = {**log.env, "POSTGRES_SCHEMA": self.schema}
            self._conn = self._connect_postgres()
        self.create([POSITIONS_DDL, FOLDS_DDL])

    def _connect_postgres(self) -> Any:
        import psycopg

        conn = psycopg.connect(**postgres_connect_args(self._env, schema=True))
        if self._scratch:
            conn.execute("SET synchronous_commit = off")
            conn.commit()
        return conn

    def _live_postgres(self) -> Any:
        # A dropped connection (server restart, idle kill) is replaced on next use; the
        # operation that found it dropped raised, and its caller retries.
        if self._conn.closed or self._conn.broken:
            self._conn = self._connect_postgres()
        return self._conn

    @contextmanager
    def transaction(
        self, *, locks: Sequence[str] = (pg_locks.PROJECTIONS,)
    ) -> Iterator[_SQLiteWriter | _PostgresWriter]:
        """One transaction: committed if the block ends normally, else rolled back.

        On PostgreSQL it first takes the schema's advisory ``locks``, in the order
        given (by default the projections lock, so one node writes read-model rows at a
        time: see ``pg_locks``); SQLite's ``BEGIN IMMEDIATE`` serialises writers anyway.
        """
        if self.sqlite_path is not None:
            cursor = self._conn.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield _SQLiteWriter(cursor)
            except BaseException:
                self._conn.rollback()
                raise
            self._conn.commit()
            return
        conn = self._live_postgres()
        with conn.transaction(), conn.cursor() as cursor:
            for purpose in locks:
                pg_locks.lock_for(cursor, purpose, self.schema)
            yield _PostgresWriter(cursor)

    def missing(self, names: Sequence[str]) -> list[str]:
        """Which of the tables and indexes ``names`` do not exist (read from the
        catalog: no lock is taken on them)."""
        if self.sqlite_path is not None:
            found = {
                str(name)
                for (name,) in self._conn.execute(
                    "SELECT name FROM sqlite_master WHERE type IN ('table', 'index')"
                ).fetchall()
            }
        else:
            conn = self._live_postgres()
            with conn.transaction(), conn.cursor() as cursor:
                found = {
                    name
                    for kind, name in pg_locks.catalog(cursor, self.schema)
                    if kind == "relation"
                }
        return [name for name in names if name not in found]

    def create(self, statements: Sequence[str]) -> None:
        """Run the ``CREATE ... IF NOT EXISTS`` ``statements`` unless everything they
        make exists already (then nothing is locked or written). On PostgreSQL they
        run in one transaction that takes the schema's DDL lock, then its projections
        lock, so nodes starting together take turns and no projection batch runs
        beside them (a batch holds row locks this DDL would wait for, and the other
        way round)."""
        made = [made_by(statement) for statement in statements]
        if None not in made and not self.missing([name for name in made if name is not None]):
            return
        with self.transaction(locks=(pg_locks.DDL, pg_locks.PROJECTIONS)) as db:
            for statement in statements:
                db.execute(statement)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query outside any write transaction."""
        if self.sqlite_path is not None:
            return list(self._conn.execute(sql, params).fetchall())
        conn = self._live_postgres()
        with conn.transaction(), conn.cursor() as cursor:
            cursor.execute(_pg(sql), params)
            return list(cursor.fetchall())

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """A read-only query's rows as the answers show them (``formats``): ids as
        text, ISO times, names, JSON decoded."""
        if self.sqlite_path is not None:
            cursor = self._conn.execute(sql, params)
            columns = [d[0] for d in cursor.description]
            return [answer_row(columns, r) for r in cursor.fetchall()]
        conn = self._live_postgres()
        with conn.transaction(), conn.cursor() as cursor:
            cursor.execute(_pg(sql), params)
            columns = [d.name for d in cursor.description]
            return [answer_row(columns, r) for r in cursor.fetchall()]

    def chunks(self, sql: str, size: int = 5000) -> Iterator[list[tuple[Any, ...]]]:
        """Rows of a read-only query, ``size`` at a time (bounded memory)."""
        if self.sqlite_path is not None:
            cursor = self._conn.execute(sql)
            while rows := cursor.fetchmany(size):
                yield rows
            return
        conn = self._live_postgres()
        with conn.transaction(), conn.cursor(name="tierlog_chunks") as cursor:
            cursor.execute(_pg(sql))
            while rows := cursor.fetchmany(size):
                yield rows

    def positions(self) -> dict[str, int]:
        """The log position each projection has processed."""
        return {
            name: int(pos)
            for name, pos in self.query(
                "SELECT name, position FROM rm_positions WHERE name <> ?", (IDENTITY_KEY,)
            )
        }

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


def telemetry_summary(store: ReadStore) -> dict[str, Any]:
    """The telemetry read model, shaped for people and JSON."""
    from tierlog.projections.telemetry import TELEMETRY_QUERIES, summarise

    counters, states = (store.query(sql) for sql in TELEMETRY_QUERIES)
    return summarise(counters, states)
