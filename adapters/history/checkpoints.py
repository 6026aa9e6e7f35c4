"""Checkpoints of the scheduler's state, so time travel starts near where it is going.

A checkpoint is the folded state at a position, with the chain hash that covers that
position: a checkpoint of another log (a replaced file) is never used. They are derived
data, kept beside the log (SQLite: ``NAME.checkpoints.db``; PostgreSQL: a table in the
log's schema), written by whoever folds far anyway (``at``, ``diff``), and only beside
a tierlog log: the file or table is created at the first checkpoint saved.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

from tierlog.adapters.store import pg_locks
from tierlog.adapters.store.event_log import (
    EventLog,
    postgres_connect_args,
    sqlite_file,
    store_env,
)
from tierlog.adapters.store.lineage import (
    ChainView,
    Mismatch,
    keep_file_aside,
    keep_tables_aside,
    kept_file,
    kept_schema,
)
from tierlog.adapters.store.probe import (
    holds_sqlite_pages,
    postgres_read_only,
    sqlite_read_only,
)
from tierlog.domain.snapshot import OlderFoldError, dump_state, load_state
from tierlog.domain.state import SchedulerState

EVERY = 50_000
TABLE = "checkpoints_lean"  # in the SQLite checkpoints file
PG_TABLE = "tierlog_checkpoints_lean"  # in the log's PostgreSQL schema
# The running scheduler's own checkpoints (``tierlog.adapters.runtime.checkpoints``), in
# the same file or schema: they move aside with these when a log is replaced.
SCHEDULER_TABLE = "scheduler_checkpoints"
PG_SCHEDULER_TABLE = "tierlog_scheduler_checkpoints"
# The audit's seals (``tierlog.adapters.audit.seal``): the newest clean audit's position,
# chain hash and folded state, in the same file or schema (moved aside with them).
AUDIT_TABLE = "audit_seals"
PG_AUDIT_TABLE = "tierlog_audit_seals"
WHAT = "checkpoints"
logger = logging.getLogger("tierlog.checkpoints")
_COLUMNS = "position BIGINT PRIMARY KEY, chain_hash {0} NOT NULL, state {0} NOT NULL"


def checkpoints_path(log_path: str) -> Path:
    """The checkpoints file beside a SQLite log: ``tierlog.db`` → ``tierlog.checkpoints.db``."""
    path = Path(log_path)
    return path.with_name(path.stem + ".checkpoints.db")


class CheckpointStore:
    """Save and find folded states by position.

    Opening one creates nothing: checkpoints are read through a read-only connection
    when there are any, and the file (or PostgreSQL table) is created at the first
    ``save``, and only with ``write``. Saving is best effort: a store that cannot take
    a checkpoint (a read-only folder, a role without CREATE) only makes time travel
    slower, so the failure is logged and saving stops.
    """

    def __init__(
        self, log: EventLog, *, write: bool = True, scheduler: bool = False, audit: bool = False
    ) -> None:
        """Time travel's checkpoints, or (``scheduler``) the running scheduler's, or
        (``audit``) the audit's seals."""
        self.log = log
        self._write = write
        self._writer: Any = None
        self._name = SCHEDULER_TABLE if scheduler else AUDIT_TABLE if audit else TABLE
        self._pg_name = PG_SCHEDULER_TABLE if scheduler else PG_AUDIT_TABLE if audit else PG_TABLE
        if log.sqlite_path is not None:
            self._path: Path | None = checkpoints_path(log.sqlite_path)
            self._ph = "?"
            self._table = self._name
        else:
            self._path = None
            self._ph = "%s"
            self._table = f'"{log.env["POSTGRES_SCHEMA"]}".{self._pg_name}'

    def save(self, state: SchedulerState) -> None:
        """Keep ``state`` (at its position) unless one is kept there already."""
        if not self._write:
            return
        chain = self.log.chain_hash_at(state.position)
        if chain is None:
            return
        self.insert(state.position, chain, dump_state(state))

    def insert(self, position: int, chain: bytes, data: bytes | bytearray) -> bool:
        """Keep ``data`` (a dumped state at ``position``, whose chain hash is ``chain``);
        False if this store cannot write (said once in the log)."""
        if not self._write:
            return False
        try:
            self._writable().execute(
                f"INSERT INTO {self._table} VALUES ({self._ph}, {self._ph}, {self._ph}) "
                "ON CONFLICT (position) DO NOTHING",
                (position, chain, data),
            )
        except Exception as exc:  # sqlite3 or psycopg: no checkpoint, same answer
            logger.warning("no checkpoint kept at %s: %s", position, exc)
            self._write = False
            return False
        return True

    def replace_all(self, position: int, chain: bytes, data: bytes | bytearray) -> bool:
        """Keep ``data`` at ``position`` as the only row (the audit's one seal); False
        if this store cannot write (said once in the log)."""
        if not self._write:
            return False
        try:
            conn = self._writable()
            conn.execute(f"DELETE FROM {self._table}")
            if self._path is None:
                return self.insert(position, chain, data)
            # SQLite: written into a zeroblob through blob I/O, a page at a time, so the
            # library does not copy the whole state twice on the way in.
            with conn:
                conn.execute("BEGIN")
                row = conn.execute(
                    f"INSERT INTO {self._table} VALUES (?, ?, zeroblob(?))",
                    (position, chain, len(data)),
                ).lastrowid
                with conn.blobopen(self._table, "state", row) as blob:
                    view = memoryview(data)
                    for at in range(0, len(view), 1 << 20):
                        blob.write(view[at : at + (1 << 20)])
        except Exception as exc:  # sqlite3 or psycopg: as ``insert``
            logger.warning("nothing kept at %s: %s", position, exc)
            self._write = False
            return False
        return True

    def keep_newest(self, count: int) -> None:
        """Delete every checkpoint but the newest ``count`` (after an ``insert``)."""
        if self._writer is None:
            return
        self._writer.execute(
            f"DELETE FROM {self._table} WHERE position < (SELECT MIN(position) FROM "
            f"(SELECT position FROM {self._table} ORDER BY position DESC LIMIT {self._ph}) AS k)",
            (count,),
        )

    def newest(self, at_most: int, count: int) -> list[tuple[int, bytes, bytes]]:
        """Up to ``count`` checkpoints ``(position, chain hash, data)`` at or before
        position ``at_most``, newest first."""
        rows = self._rows(
            f"SELECT position, chain_hash, state FROM {self._table} WHERE position <= {self._ph}"
            f" ORDER BY position DESC LIMIT {self._ph}",
            (at_most, count),
        )
        return [(int(at), bytes(chain), bytes(data)) for at, chain, data in rows]

    def _writable(self) -> Any:
        if self._writer is None:
            self._writer = self._create()
        return self._writer

    def _create(self) -> Any:
        if self._path is not None:
            conn: Any = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 5000")
            if self._name == TABLE:
                # Checkpoints of full states (every finished task kept) were written under
                # the old name before time travel dropped finished tasks; nothing reads
                # them.
                conn.execute("DROP TABLE IF EXISTS checkpoints")
                if conn.execute("PRAGMA freelist_count").fetchone()[0]:
                    conn.execute("VACUUM")  # give the old table's pages back to the disk
            conn.execute(f"CREATE TABLE IF NOT EXISTS {self._table} ({_COLUMNS.format('BLOB')})")
            return conn
        import psycopg

        conn = psycopg.connect(**postgres_connect_args(self.log.env), autocommit=True)
        schema = self.log.env["POSTGRES_SCHEMA"]
        present = {name for kind, name in pg_locks.catalog(conn.cursor(), schema)}
        legacy = self._pg_name == PG_TABLE and "tierlog_checkpoints" in present
        if legacy or self._pg_name not in present:
            # Only when something is to be done, and then under the schema's DDL lock
            # (``pg_locks``), beside nodes that may be starting on the same schema.
            with conn.transaction():
                pg_locks.lock_for(conn, pg_locks.DDL, schema)
                conn.execute(f'DROP TABLE IF EXISTS "{schema}".tierlog_checkpoints')
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {self._table} ({_COLUMNS.format('BYTEA')})"
                )
        return conn

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self._writer is not None:
            return list(self._writer.execute(sql, params).fetchall())
        if self._path is not None:
            return _sqlite_rows(self._path, sql, params)
        return _postgres_rows(self.log.env, self._table, sql, params)

    def nearest(self, position: int) -> SchedulerState | None:
        """The latest usable checkpoint at or before ``position``."""
        rows = self._rows(
            f"SELECT position, chain_hash, state FROM {self._table} WHERE position <= {self._ph}"
            " ORDER BY position DESC LIMIT 3",
            (position,),
        )
        for at, chain, data in rows:
            if self.log.chain_hash_at(at) == bytes(chain):
                try:
                    return load_state(bytes(data))
                except OlderFoldError:  # an earlier tierlog's: try an older one, or fold
                    continue
        return None

    def close(self) -> None:
        """Close the connection."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _sqlite_rows(path: Path, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """A query on a checkpoints file, read-only; none when there is no file (or one a
    process killed at its creation left empty) or no table."""
    if not holds_sqlite_pages(path):
        return []
    with sqlite_read_only(path) as conn:
        try:
            return list(conn.execute(sql, params).fetchall())
        except sqlite3.OperationalError:  # no table: no checkpoints
            return []


def _postgres_rows(
    env: dict[str, str], table: str, sql: str, params: tuple[Any, ...]
) -> list[tuple[Any, ...]]:
    """A query on the checkpoints table, read-only; none when there is no table."""
    with postgres_read_only(env) as conn:
        found = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
        if found is None or found[0] is None:
            return []
        return list(conn.execute(sql, params).fetchall())


def checkpoints_mismatch(url: str, log: ChainView, when: str) -> Mismatch | None:
    """Checkpoints beside the log at ``url`` (time travel's or the scheduler's) that do
    not belong to ``log``: the newest one is beyond its head, or has another chain hash
    than the log's there. Reads them without creating or changing anything."""
    newest = "SELECT position, chain_hash FROM {} ORDER BY position DESC LIMIT 1"
    path = sqlite_file(url)
    found: list[tuple[Any, ...]] = []
    if path is not None:
        for table in (TABLE, SCHEDULER_TABLE):
            found += _sqlite_rows(checkpoints_path(str(path)), newest.format(table), ())
    else:
        env = store_env(url, create=False)
        for name in (PG_TABLE, PG_SCHEDULER_TABLE):
            table = f'"{env["POSTGRES_SCHEMA"]}".{name}'
            found += _postgres_rows(env, table, newest.format(table), ())
    head = log.head()
    for row in found:
        position, chain = int(row[0]), bytes(row[1])
        if position > head or log.chain_hash_at(position) != chain:
            return Mismatch(WHAT, position, head, position > head, _kept_as(url, when))
    return None


def _kept_as(url: str, when: str) -> str:
    path = sqlite_file(url)
    if path is not None:
        return kept_file(checkpoints_path(str(path)), when).name
    return f"schema {kept_schema(store_env(url, create=False)['POSTGRES_SCHEMA'], when)!r}"


def keep_aside(url: str, when: str) -> str:
    """Keep the checkpoints of a replaced log under another name (see
    ``tierlog.adapters.store.lineage``). Returns where."""
    path = sqlite_file(url)
    if path is not None:
        return str(keep_file_aside(checkpoints_path(str(path)), when))
    import psycopg

    env = store_env(url, create=False)
    with psycopg.connect(**postgres_connect_args(env), autocommit=True) as conn:
        tables = [PG_TABLE, PG_SCHEDULER_TABLE, PG_AUDIT_TABLE]
        return f"schema {keep_tables_aside(conn, env['POSTGRES_SCHEMA'], tables, when)!r}"


def state_at(
    log: EventLog, position: int, every: int = EVERY, *, write: bool = True
) -> SchedulerState:
    """The state after positions ``1..position``, without the tasks that had finished
    by then (``SchedulerState(keep_finished=False)``: memory follows the live tasks, not
    the log): from the nearest checkpoint, folding the rest, and (with ``write``)
    leaving a checkpoint every ``every`` positions it passes."""
    store = CheckpointStore(log, write=write)
    try:
        state = store.nearest(position) or SchedulerState(keep_finished=False)
        for pos, event in log.iter_events(after=state.position, stop=position):
            state.apply(event, pos)
            if pos % every == 0:
                store.save(state)
        return state
    finally:
        store.close()
