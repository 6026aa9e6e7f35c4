"""Derived data must belong to its log: read models and checkpoints that are ahead of
the log, or that disagree with its hash chain where they say they stopped, were built
from another log (a file truncated or replaced). They are the only record left of that
history, so nothing rebuilds them silently: ``ReplacedLogError`` stops the start, and
only an explicit ``--accept-replaced-log`` keeps them aside (``keep_file_aside``,
``keep_tables_aside``) and starts over.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from tierlog.adapters.store import pg_locks
from tierlog.domain.errors import StoreError

FLAG = "--accept-replaced-log"


class ReplacedLogError(StoreError):
    """Derived data was built from another log than the one found."""

    code = "replaced_log"


class ChainView(Protocol):
    """What the check needs of a log: its head and its chain (an ``EventLog``)."""

    def head(self) -> int:
        """The position of the last event."""
        ...

    def chain_hash_at(self, position: int) -> bytes | None:
        """The chain hash covering ``position``, None if none does."""
        ...


class NoLog:
    """A store with no log yet (a new file, an empty schema): head 0, no chain."""

    def head(self) -> int:
        """Nothing has been appended."""
        return 0

    def chain_hash_at(self, position: int) -> bytes | None:
        """No chain row covers anything."""
        return None


def fingerprint(chain_hash: bytes | None) -> int:
    """63 bits of a chain hash (fits a signed BIGINT), -1 for none."""
    return int.from_bytes(chain_hash[:8], "big") >> 1 if chain_hash else -1


@dataclass(frozen=True)
class Mismatch:
    """Derived data that does not belong to the log: where it stopped, where the log
    ends, and whether it is ahead (else it disagrees with the chain at ``position``)."""

    what: str  # "read models", "time-travel checkpoints"
    position: int
    head: int
    ahead: bool
    kept_as: str  # where --accept-replaced-log would keep it

    def message(self) -> str:
        """One line: both positions, why it stops, and the way out."""
        if self.ahead:
            found = (
                f"the {self.what} are at position {self.position} but the log's head is at "
                f"{self.head}: the log was truncated or replaced"
            )
        else:
            found = (
                f"the {self.what} at position {self.position} do not match the log there "
                f"(its hash chain differs; the log's head is at {self.head}): the log was "
                "replaced"
            )
        return (
            f"{found}. Refusing to start, so that history is not discarded; {FLAG} keeps "
            f"them as {self.kept_as} and rebuilds from this log"
        )


def stamp(now: datetime | None = None) -> str:
    """The suffix that names what was kept aside: the UTC time, to the second."""
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def kept_file(path: Path, when: str) -> Path:
    """Where ``keep_file_aside`` puts ``path``: ``NAME.replaced-<time>``."""
    return path.with_name(f"{path.name}.replaced-{when}")


def keep_file_aside(path: Path, when: str) -> Path:
    """Rename a SQLite file (after folding its WAL in, so the kept copy is one whole
    file) to ``kept_file(path, when)``; a WAL left behind goes along with it."""
    target = kept_file(path, when)
    if target.exists():
        raise StoreError(f"{target} exists already; move it and try again")
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    path.rename(target)
    for suffix in ("-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            side.rename(Path(f"{target}{suffix}"))
    return target


def kept_schema(schema: str, when: str) -> str:
    """The PostgreSQL schema that keeps a replaced log's tables (63 characters at most)."""
    suffix = f"_replaced_{when.lower()}"
    return schema[: 63 - len(suffix)] + suffix


def keep_tables_aside(conn: Any, schema: str, tables: Sequence[str], when: str) -> str:
    """Move ``tables`` (those that exist) from ``schema`` into ``kept_schema`` in one
    transaction (their indexes go with them, so new tables can take the names), under
    the schema's DDL and projections locks (``pg_locks``: no projection batch of a
    running node holds rows of them meanwhile)."""
    from psycopg.sql import SQL, Identifier

    kept = kept_schema(schema, when)
    with conn.transaction():
        for purpose in (pg_locks.DDL, pg_locks.PROJECTIONS):
            pg_locks.lock_for(conn, purpose, schema)
        conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(kept)))
        for table in tables:
            conn.execute(
                SQL("ALTER TABLE IF EXISTS {}.{} SET SCHEMA {}").format(
                    Identifier(schema), Identifier(table), Identifier(kept)
                )
            )
    return kept
