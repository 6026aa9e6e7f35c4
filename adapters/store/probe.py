"""What a store holds, found without creating or changing anything.

A read-only command must not leave a file, a table or a trigger behind on a mistyped
path or on another application's database, so before anything opens a store for
reading it is looked at here: a SQLite file through a read-only connection (and no
``-wal``/``-shm`` files are made beside a file that has none), a PostgreSQL schema
through the catalog in a read-only session. ``serve`` uses the same look to tell a
new store (which it may create) from one that is not a tierlog log (which it refuses).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from enum import Enum
from pathlib import Path
from typing import Any

from tierlog.adapters.store.cluster import CLUSTER_TABLES
from tierlog.domain.errors import StoreUnusableError

# The tables every tierlog log has: eventsourcing's events table (named by the store's
# recorder) and tierlog's chain beside it.
SQLITE_LOG_TABLES = ("stored_events", "stored_events_chain")
POSTGRES_LOG_TABLES = ("tierlog_events", "tierlog_events_chain")
# tierlog's derived tables in a PostgreSQL schema: read models, checkpoints.
DERIVED_PREFIXES = ("rm_", "tierlog_checkpoints", *CLUSTER_TABLES)
"""tierlog's own tables beside the log: read models, checkpoints, the nodes' lease, list
and inbox (``store.cluster``)."""
_SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreKind(Enum):
    """What a store holds."""

    MISSING = "missing"  # no file (SQLite); a new log may be created there
    EMPTY = "empty"  # a file or schema with no tables at all
    TIERLOG = "tierlog"  # tierlog's tables are there


def _header(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(100)


def sqlite_uri(path: Path, header: bytes | None = None) -> str:
    """A read-only URI for ``path``. A file in WAL mode with no ``-wal`` beside it is
    opened ``immutable`` (no process has it open, and a read-only connection would
    otherwise leave ``-wal`` and ``-shm`` files behind)."""
    uri = path.resolve().as_uri() + "?mode=ro"
    wal = header is not None and len(header) > 19 and header[18] == 2
    if wal and not Path(f"{path}-wal").exists():
        uri += "&immutable=1"
    return uri


@contextmanager
def sqlite_read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to an existing SQLite file that creates nothing beside it
    (``StoreUnusableError`` for a folder, an empty file or a file that is not SQLite)."""
    if path.is_dir():
        raise StoreUnusableError(f"{path} is a folder, not a tierlog log")
    if not path.exists():
        raise StoreUnusableError(f"no log at {path} (a mistyped path?)")
    header = _header(path)
    if not header.startswith(_SQLITE_MAGIC):
        what = "an empty file" if not header else "not a SQLite database"
        raise StoreUnusableError(f"{path} is {what}, not a tierlog log")
    try:
        conn = sqlite3.connect(sqlite_uri(path, header), uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreUnusableError(f"cannot open {path}: {exc}") from exc
    with closing(conn):
        yield conn


def holds_sqlite_pages(path: Path) -> bool:
    """Whether the file at ``path`` exists and holds anything. SQLite creates a file when
    it opens it but writes its first page only at the first commit, so a process killed
    in between leaves a 0-byte file: for a derived file (read models, checkpoints) that
    means nothing was ever kept there, not a damaged store."""
    return path.is_file() and path.stat().st_size > 0


def sqlite_tables(path: Path) -> set[str]:
    """The table names of an existing SQLite file, read without changing it."""
    with sqlite_read_only(path) as conn:
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        except sqlite3.Error as exc:
            raise StoreUnusableError(f"{path} is not a readable SQLite database: {exc}") from exc
    return {str(name) for (name,) in rows}


def sqlite_kind(path: Path) -> StoreKind:
    """What the SQLite file at ``path`` holds (an empty file counts as a new store)."""
    if not path.exists():
        return StoreKind.MISSING
    if path.is_file() and path.stat().st_size == 0:
        return StoreKind.EMPTY
    return _kind(sqlite_tables(path), str(path), SQLITE_LOG_TABLES)


def _kind(tables: set[str], where: str, log_tables: tuple[str, str]) -> StoreKind:
    if all(name in tables for name in log_tables):
        return StoreKind.TIERLOG
    # tierlog's own derived tables (read models, checkpoints) in a PostgreSQL schema
    # whose log tables are gone: no log, which the lineage check then explains.
    tables = {name for name in tables if not name.startswith(DERIVED_PREFIXES)}
    if not tables:
        return StoreKind.EMPTY
    if log_tables[0] in tables:
        detail = "an event store without tierlog's hash chain"
    else:
        detail = "tables " + ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
    raise StoreUnusableError(f"{where} is not a tierlog log ({detail})")


def postgres_where(env: dict[str, str]) -> str:
    """Host, port, database and schema of a PostgreSQL store, for messages (never the
    user's password)."""
    return (
        f"schema {env['POSTGRES_SCHEMA']!r} of database {env['POSTGRES_DBNAME']!r} "
        f"at {env['POSTGRES_HOST']}:{env['POSTGRES_PORT']}"
    )


def postgres_read_only(env: dict[str, str]) -> Any:
    """A psycopg connection in read-only sessions (autocommit) to a store's database."""
    import psycopg

    try:
        return psycopg.connect(
            dbname=env["POSTGRES_DBNAME"],
            host=env["POSTGRES_HOST"],
            port=int(env["POSTGRES_PORT"]),
            user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"] or None,
            connect_timeout=int(env["POSTGRES_CONNECT_TIMEOUT"]),
            options="-c default_transaction_read_only=on",
            autocommit=True,
        )
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
        raise StoreUnusableError(f"cannot open {postgres_where(env)}: {reason}") from exc


def postgres_kind(env: dict[str, str]) -> StoreKind:
    """What a PostgreSQL store's schema holds (``StoreUnusableError`` when the schema or
    the database is missing)."""
    schema = env["POSTGRES_SCHEMA"]
    with postgres_read_only(env) as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        if found.fetchone() is None:
            raise StoreUnusableError(
                f'no {postgres_where(env)} (create it with CREATE SCHEMA "{schema}", '
                "or start the server with tierlog serve --create-schema)"
            )
        rows = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
            (schema,),
        ).fetchall()
    return _kind({str(name) for (name,) in rows}, postgres_where(env), POSTGRES_LOG_TABLES)


def store_kind(env: dict[str, str], sqlite_path: Path | None) -> StoreKind:
    """What the store of an eventsourcing environment holds (see ``StoreKind``)."""
    if sqlite_path is not None:
        return sqlite_kind(sqlite_path)
    return postgres_kind(env)


def require_log(env: dict[str, str], sqlite_path: Path | None) -> None:
    """Refuse, in one line, a store that is not an existing tierlog log."""
    kind = store_kind(env, sqlite_path)
    if kind is StoreKind.TIERLOG:
        return
    where = str(sqlite_path) if sqlite_path is not None else postgres_where(env)
    if kind is StoreKind.MISSING:
        raise StoreUnusableError(f"no log at {where} (a mistyped path?)")
    raise StoreUnusableError(f"{where} holds no tierlog log (it has no tables of one)")
