"""Checkpoints of the scheduler's state, so time travel starts near where it is going.

A checkpoint is the folded state at a position, with the chain hash that covers that
position: a checkpoint of another log (a replaced file) is never used. They are derived
data, kept beside the log (SQLite: ``NAME.checkpoints.db``; PostgreSQL: a table in the
log's schema), and written by whoever folds far anyway (``at``, the audit).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tierlog.adapters.store.event_log import EventLog, postgres_connect_args
from tierlog.domain.snapshot import dump_state, load_state
from tierlog.domain.state import SchedulerState

EVERY = 50_000


class CheckpointStore:
    """Save and find folded states by position."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        if log.sqlite_path is not None:
            path = Path(log.sqlite_path)
            self._conn: Any = sqlite3.connect(
                path.with_name(path.stem + ".checkpoints.db"), isolation_level=None
            )
            self._ph = "?"
            self._table = "checkpoints_lean"
            old = "checkpoints"
        else:
            import psycopg

            self._conn = psycopg.connect(**postgres_connect_args(log.env), autocommit=True)
            self._ph = "%s"
            schema = log.env["POSTGRES_SCHEMA"]
            self._table = f'"{schema}".tierlog_checkpoints_lean'
            old = f'"{schema}".tierlog_checkpoints'
        # Checkpoints of full states (every finished task kept) were written under the
        # old name before time travel dropped finished tasks; nothing reads them now.
        self._conn.execute(f"DROP TABLE IF EXISTS {old}")
        if (
            log.sqlite_path is not None
            and self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        ):
            self._conn.execute("VACUUM")  # give the old table's pages back to the disk
        blob = "BLOB" if log.sqlite_path is not None else "BYTEA"
        self._conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self._table} (position BIGINT PRIMARY KEY, "
            f"chain_hash {blob} NOT NULL, state {blob} NOT NULL)"
        )

    def save(self, state: SchedulerState) -> None:
        """Keep ``state`` (at its position) unless one is kept there already."""
        chain = self.log.chain_hash_at(state.position)
        if chain is None:
            return
        data = dump_state(state)
        self._conn.execute(
            f"INSERT INTO {self._table} VALUES ({self._ph}, {self._ph}, {self._ph}) "
            "ON CONFLICT (position) DO NOTHING",
            (state.position, chain, data),
        )

    def nearest(self, position: int) -> SchedulerState | None:
        """The latest usable checkpoint at or before ``position``."""
        rows = self._conn.execute(
            f"SELECT position, chain_hash, state FROM {self._table} WHERE position <= {self._ph}"
            " ORDER BY position DESC LIMIT 3",
            (position,),
        ).fetchall()
        for at, chain, data in rows:
            if self.log.chain_hash_at(at) == bytes(chain):
                return load_state(bytes(data))
        return None

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


def state_at(log: EventLog, position: int, every: int = EVERY) -> SchedulerState:
    """The state after positions ``1..position``, without the tasks that had finished
    by then (``SchedulerState(keep_finished=False)``: memory follows the live tasks, not
    the log): from the nearest checkpoint, folding the rest, and leaving a checkpoint
    every ``every`` positions it passes."""
    store = CheckpointStore(log)
    try:
        state = store.nearest(position) or SchedulerState(keep_finished=False)
        for pos, event in log.iter_events(after=state.position, stop=position):
            state.apply(event, pos)
            if pos % every == 0:
                store.save(state)
        return state
    finally:
        store.close()
