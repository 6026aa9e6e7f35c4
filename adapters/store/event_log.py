"""The append-only event log on eventsourcing: SQLite by default, PostgreSQL by DSN."""

from __future__ import annotations

import math
import os
import select
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlparse
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import IntegrityError, Mapper, PersistenceError, StoredEvent

from tierlog.adapters.store.chain_reads import ChainReads
from tierlog.adapters.store.cluster import INBOX_GONE_SQLSTATE, NOT_LEADER_SQLSTATE, sqlstate_of
from tierlog.adapters.store.codec import MsgspecMapper
from tierlog.adapters.store.faults import (
    check_postgres,
    describe,
    one_line,
    open_failure,
    probe_directory,
    redact_url,
    storage_fault,
)
from tierlog.adapters.store.probe import require_log, sqlite_uri
from tierlog.adapters.store.sqlite import TierlogSQLiteRecorder
from tierlog.adapters.store.stream_reads import StreamReads
from tierlog.domain.errors import (
    CommandWithdrawnError,
    ConcurrencyConflictError,
    NotLeaderError,
    StoreError,
    StoreUnavailableError,
    StoreUnusableError,
    ValidationError,
)
from tierlog.domain.events import DomainEvent

DEFAULT_STORE = "sqlite:///./tierlog.db"
DEFAULT_CONNECT_TIMEOUT_S = 5.0
"""How long opening a PostgreSQL connection may take before the store is reported
unreachable (libpq counts whole seconds, at least 2)."""

# One stored record as ``iter_raw`` gives it: (position, originator id as 32 lowercase
# hex digits, originator version, topic, payload bytes).
RawRow = tuple[int, str, int, str, bytes]


def raw_id_bytes(raw_id: str) -> bytes:
    """The 16 bytes of a raw originator id from ``iter_raw``, as the hash chain hashes it."""
    return bytes.fromhex(raw_id)


def sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///`` store URL (None for other stores); creates nothing."""
    parsed = urlparse(url)
    if parsed.scheme != "sqlite":
        return None
    raw = unquote(parsed.path)
    return Path(raw[1:] if raw.startswith("/") else raw).expanduser()


def store_env(
    url: str, *, create: bool = True, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
) -> dict[str, str]:
    """The eventsourcing environment for a store URL.

    ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or
    ``postgresql://user:password@host:port/dbname?schema=name``. With ``create`` (a
    writer's) the folder of a SQLite file is made if missing; without, nothing is.
    """
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        raw = unquote(parsed.path)
        path = raw[1:] if raw.startswith("/") else raw
        if not path:
            raise ValidationError("a sqlite store URL needs a file path", field="store")
        if create:
            Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(Path(path).expanduser()),
            "SQLITE_LOCK_TIMEOUT": "30",
            "APPLICATION_RECORDER_TOPIC": "tierlog.adapters.store.sqlite:TierlogSQLiteRecorder",
        }
    if parsed.scheme in ("postgresql", "postgres"):
        query = parse_qs(parsed.query)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": (parsed.path or "/").lstrip("/") or "postgres",
            "POSTGRES_HOST": parsed.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parsed.port or 5432),
            "POSTGRES_USER": unquote(parsed.username or os.environ.get("USER", "postgres")),
            "POSTGRES_PASSWORD": unquote(parsed.password or ""),
            "POSTGRES_SCHEMA": query.get("schema", ["public"])[0],
            "POSTGRES_CONNECT_TIMEOUT": str(max(1, math.ceil(connect_timeout_s))),
            "POSTGRES_LOCK_TIMEOUT": "30",
            "APPLICATION_RECORDER_TOPIC": "tierlog.adapters.store.postgres:TierlogPostgresRecorder",
        }
    raise ValidationError(
        f"unknown store {redact_url(url)!r}: use sqlite:///path.db or postgresql://...",
        field="store",
    )


def postgres_connect_args(env: dict[str, str], *, schema: bool = False) -> dict[str, Any]:
    """psycopg connection arguments for a store's environment (tierlog's own
    connections beside eventsourcing's pool: LISTEN, read models)."""
    args: dict[str, Any] = {
        "dbname": env["POSTGRES_DBNAME"],
        "host": env["POSTGRES_HOST"],
        "port": int(env["POSTGRES_PORT"]),
        "user": env["POSTGRES_USER"],
        "password": env["POSTGRES_PASSWORD"] or None,
        "connect_timeout": int(env["POSTGRES_CONNECT_TIMEOUT"]),
    }
    if schema:
        args["options"] = f"-c search_path={env['POSTGRES_SCHEMA']}"
    return args


class TierlogApplication(Application[UUID]):
    """eventsourcing application that wires our msgspec mapper to the chosen recorder."""

    name = "tierlog"

    def construct_mapper(self) -> Mapper[UUID]:
        """Events are stored as msgspec JSON."""
        return MsgspecMapper()


class EventLog(ChainReads, StreamReads):
    """Append, read and follow the log. Positions are the store's notification ids.

    Opened for writing (the default) it creates the log's tables if they are missing.
    Opened ``read_only`` it first checks that the store is an existing tierlog log
    (``StoreUnusableError`` in one line if not), then reads it without creating or
    changing anything: SQLite through a ``mode=ro`` connection, PostgreSQL without any
    DDL; ``append`` is refused. A store that cannot be opened raises
    ``StoreUnusableError`` (one line, no password); a fault of the storage while it runs
    (disk full, read-only, I/O error, connection lost) raises ``StoreUnavailableError``
    from ``append``, ``read`` and ``head``.
    """

    def __init__(
        self,
        url: str = DEFAULT_STORE,
        *,
        read_only: bool = False,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        idle_in_transaction_s: float | None = None,
    ) -> None:
        self.url = url
        self.read_only = read_only
        self.env = store_env(url, create=not read_only, connect_timeout_s=connect_timeout_s)
        if idle_in_transaction_s is not None and self.env.get("POSTGRES_DBNAME"):
            # PostgreSQL ends a transaction its client left open this long, with its locks:
            # a leader paused mid-append (SIGSTOP, a stall) cannot hold the lease row and
            # the events table, and so the fail-over, for longer than this.
            self.env["POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT"] = str(
                max(1, math.ceil(idle_in_transaction_s))
            )
        self.is_postgres = self.env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
        self.where = describe(self.env)
        """Where the store is, for messages (no password)."""
        self._sqlite_file = None if self.is_postgres else sqlite_file(url)
        if read_only:
            require_log(self.env, self._sqlite_file)
            self.env["CREATE_TABLE"] = "no"
            if self._sqlite_file is not None:
                self.env["SQLITE_DBNAME"] = sqlite_uri(self._sqlite_file)
        self.app = self._open()
        self.recorder: Any = self.app.recorder
        self.mapper = self.app.mapper
        self.codec = cast(MsgspecMapper, self.mapper).codec
        self._listener: Any = None
        self.fence: tuple[str, int] | None = None
        """``(node, epoch)`` while this node leads on PostgreSQL: every append checks
        it in its own transaction (``NotLeaderError`` once the lease is lost)."""
        # Events check_events encoded, by id, for the append that follows.
        self._checked: dict[int, tuple[DomainEvent, bytes]] = {}

    def _open(self) -> TierlogApplication:
        # Processes starting together race to create the tables (PostgreSQL's
        # CREATE TABLE IF NOT EXISTS is not atomic; SQLite's switch to WAL needs a
        # moment alone): the loser retries, and then finds the tables made. A store
        # that cannot be opened at all is said in one line at once.
        if self.is_postgres:
            check_postgres(self.env, postgres_connect_args(self.env))
        elif Path(self.env["SQLITE_DBNAME"]).is_dir():
            raise StoreUnusableError(f"{self.env['SQLITE_DBNAME']} is a folder, not a log file")
        for attempt in range(20):
            try:
                return TierlogApplication(env=self.env)
            except (PersistenceError, sqlite3.Error) as exc:
                reason = open_failure(exc, self.env)
                if reason is not None:
                    raise StoreUnusableError(reason, field="store") from exc
                if attempt == 19:
                    raise StoreUnusableError(
                        f"cannot open {self.where}: {one_line(exc)}", field="store"
                    ) from exc
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def _fault(self, exc: BaseException) -> StoreUnavailableError | None:
        """``exc`` as a ``StoreUnavailableError`` if the storage failed; None if not."""
        reason = storage_fault(exc)
        if reason is None:
            return None
        return StoreUnavailableError(f"{self.where}: {reason} ({one_line(exc)})", reason=reason)

    @contextmanager
    def _faults(self) -> Iterator[None]:
        """Say a fault of the storage as ``StoreUnavailableError``; let the rest through."""
        try:
            yield
        except Exception as exc:
            fault = self._fault(exc)
            if fault is None:
                raise
            raise fault from exc

    def probe(self) -> None:
        """Check the store can take a write now, appending nothing: on SQLite a small
        file written and synced beside the log, on PostgreSQL a connection that is not
        read-only. Raises ``StoreUnavailableError`` if not."""
        with self._faults():
            if not self.is_postgres:
                probe_directory(Path(self.env["SQLITE_DBNAME"]))
                return
            with self.recorder.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute("SELECT current_setting('transaction_read_only') AS ro")
                row = curs.fetchone()
            if row is None or row["ro"] != "off":
                raise StoreUnavailableError(
                    f"{self.where}: the database is read-only", reason="the database is read-only"
                )

    @property
    def sqlite_path(self) -> str | None:
        """The SQLite file, or None on PostgreSQL."""
        return None if self._sqlite_file is None else str(self._sqlite_file)

    def check_events(self, events: Sequence[DomainEvent]) -> None:
        """Raise ``UndecodableEventError`` (naming its type) for the first of ``events``
        the log could not give back: what ``append`` refuses, checked ahead of it (the
        runtime checks each command's events so that one bad event fails its command
        alone). The encoded events are kept for the next ``append``, which would
        otherwise encode and check them again."""
        for event in events:
            self._checked[id(event)] = (event, self.codec.encode_checked(event))

    def _encoded(self, event: DomainEvent) -> bytes:
        kept = self._checked.get(id(event))
        if kept is not None and kept[0] is event:  # the same object, not a reused id
            return kept[1]
        return self.codec.encode_checked(event)

    def append(
        self, events: Sequence[DomainEvent], *, inbox: Sequence[tuple[int, bytes]] = ()
    ) -> list[int]:
        """Append events in one transaction; a lost version race raises a conflict.

        Every event is encoded (and, where its type cannot prove it safe, decoded back)
        before anything is written: one that would not decode raises
        ``UndecodableEventError`` and nothing of the batch is appended. On PostgreSQL,
        ``inbox`` answers forwarded commands (id, encoded result) in the same
        transaction, and a ``fence`` that no longer holds raises ``NotLeaderError``.
        """
        if not events:
            return []
        if self.read_only:
            raise StoreError(f"the log at {self.url} was opened read-only")
        insert: Callable[[], Any]
        try:
            topic, encoded = self.codec.topic, self._encoded
            if isinstance(self.recorder, TierlogSQLiteRecorder):
                # SQLite's rows name the aggregate by its hex: made once, here.
                rows = [
                    (e.originator_id.hex, e.originator_version, topic(e), encoded(e))
                    for e in events
                ]
                insert = partial(self.recorder.insert_rows, rows)
            else:
                stored = [
                    StoredEvent(e.originator_id, e.originator_version, topic(e), encoded(e))
                    for e in events
                ]
                insert = partial(self.recorder.insert_events, stored, fence=self.fence, inbox=inbox)
        finally:
            self._checked.clear()
        with self._write_errors():
            try:
                ids = insert()
            except IntegrityError as exc:
                raise ConcurrencyConflictError(
                    "another writer appended to the same aggregate first"
                ) from exc
        return list(ids or [])

    def complete_inbox(self, results: Sequence[tuple[int, bytes]], position: int) -> None:
        """Answer forwarded commands that appended nothing (PostgreSQL), fenced like an
        append; ``position`` is the leader's position they were decided at."""
        if not results:
            return
        with self._write_errors():
            self.recorder.complete_inbox(self.fence, results, position)

    @contextmanager
    def _write_errors(self) -> Iterator[None]:
        """A write's failure as tierlog says it: the cluster's refusals (a lost lease, a
        withdrawn command), then a fault of the storage; the rest as it is."""
        try:
            yield
        except ConcurrencyConflictError:
            raise
        except Exception as exc:
            self._raise_cluster_refusal(exc)
            fault = self._fault(exc)
            if fault is None:
                raise
            raise fault from exc

    def _raise_cluster_refusal(self, exc: Exception) -> None:
        state = sqlstate_of(exc) if self.is_postgres else None
        if state == NOT_LEADER_SQLSTATE:
            raise NotLeaderError(
                "this node no longer holds the leader lease; nothing was appended"
            ) from exc
        if state == INBOX_GONE_SQLSTATE:
            raise CommandWithdrawnError(
                "a forwarded command was withdrawn before it was committed"
            ) from exc

    def head(self) -> int:
        """The position of the last event (0 for an empty log)."""
        with self._faults():
            return int(self.recorder.max_notification_id() or 0)

    def read(
        self, after: int = 0, limit: int = 1000, stop: int | None = None
    ) -> list[tuple[int, DomainEvent]]:
        """Events with positions in ``(after, stop]``, at most ``limit``, in order."""
        with self._faults():
            return self._read(after, limit, stop)

    def _read(self, after: int, limit: int, stop: int | None) -> list[tuple[int, DomainEvent]]:
        if self.is_postgres:
            to_domain = self.mapper.to_domain_event
            notifications = self.recorder.select_notifications(
                start=after, limit=limit, stop=stop, inclusive_of_start=False
            )
            return [(n.id, cast(DomainEvent, to_domain(n))) for n in notifications]
        # On SQLite straight from the rows: eventsourcing's notifications would parse
        # every id into a UUID the payload carries anyway (a third of the cost).
        sql = (
            f"SELECT rowid, topic, state FROM {self.recorder.events_table_name}"
            " WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?"
        )
        with self.recorder.datastore.transaction(commit=False) as curs:
            curs.execute(sql, (after, 2**63 - 1 if stop is None else stop, limit))
            rows = curs.fetchall()
        decoder = self.codec.decoder
        return [(position, decoder(topic)(state)) for position, topic, state in rows]

    def iter_events(
        self, after: int = 0, stop: int | None = None, batch: int = 2000
    ) -> Iterator[tuple[int, DomainEvent]]:
        """Stream events after ``after`` (up to ``stop``) in bounded batches."""
        position = after
        while True:
            chunk = self.read(position, batch, stop)
            if not chunk:
                return
            yield from chunk
            position = chunk[-1][0]

    def iter_raw(
        self, after: int = 0, stop: int | None = None, batch: int = 1000
    ) -> Iterator[list[RawRow]]:
        """Stored records with positions in ``(after, stop]``, undecoded, in position
        order, as lists of at most ``batch`` rows (see ``RawRow``).

        For passes over the whole log that do their own decoding (the audit): no
        ``Notification`` objects, no UUID parsing. On SQLite each batch is its own query
        (keyset-paged on the rowid), so no read transaction stays open between batches;
        on PostgreSQL one server-side cursor streams the range inside one transaction
        (on one pooled connection, until the iterator is exhausted or closed).
        """
        if batch < 1:
            raise ValueError("batch must be at least 1")
        pages = self._raw_pages_postgres if self.is_postgres else self._raw_pages_sqlite
        yield from pages(after, stop, batch)

    def _raw_pages_sqlite(self, after: int, stop: int | None, batch: int) -> Iterator[list[RawRow]]:
        table = self.recorder.events_table_name
        sql = (
            f"SELECT rowid, originator_id, originator_version, topic, state FROM {table} "
            "WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?"
        )
        last = stop if stop is not None else 2**63 - 1
        datastore = self.recorder.datastore
        if datastore.pool.is_sqlite_memory_mode:  # only the pool's connections see it
            while after < last:
                with datastore.transaction(commit=False) as curs:
                    curs.execute(sql, (after, last, batch))
                    rows: list[RawRow] = curs.fetchall()
                if not rows:
                    return
                yield rows
                after = rows[-1][0]
            return
        # A connection of its own, read-only: the recorder's pool interlocks readers
        # with the writer, and this reader runs for the whole pass.
        uri = Path(str(self.sqlite_path)).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.env['SQLITE_LOCK_TIMEOUT']) * 1000}")
            while after < last:
                rows = conn.execute(sql, (after, last, batch)).fetchall()
                if not rows:
                    return
                yield rows
                after = rows[-1][0]
        finally:
            conn.close()

    def _raw_pages_postgres(
        self, after: int, stop: int | None, batch: int
    ) -> Iterator[list[RawRow]]:
        from psycopg.rows import tuple_row

        schema, table = self.env["POSTGRES_SCHEMA"], self.recorder.events_table_name
        # The id as text without dashes: the same raw form as SQLite's, whether the
        # column is uuid or text, and no UUID objects on this side.
        sql = (
            "SELECT notification_id, replace(originator_id::text, '-', ''), "
            f'originator_version, topic, state FROM "{schema}"."{table}" '
            "WHERE notification_id > %s AND notification_id <= %s ORDER BY notification_id"
        )
        last = stop if stop is not None else 2**63 - 1
        # One server-side cursor for the whole range: planned once for a fast start (the
        # index in order), where a page per query can meet a plan that sorts all that is
        # left of the table for every page (fresh tables have no statistics).
        with (
            self.recorder.datastore.get_connection() as conn,
            conn.transaction(),
            conn.cursor(name="tierlog_iter_raw", row_factory=tuple_row, binary=True) as curs,
        ):
            curs.itersize = batch
            curs.execute(sql, (after, last))
            while True:
                rows: list[RawRow] = curs.fetchmany(batch)
                if not rows:
                    return
                yield rows

    def events_of(self, aggregate_id: UUID) -> list[DomainEvent]:
        """All events of one aggregate, in version order."""
        return list(self.app.events.get(aggregate_id))  # type: ignore[arg-type]

    def wait_for_append(self, timeout: float) -> bool:
        """Block up to ``timeout`` s; True if another writer appended (PostgreSQL).

        SQLite has no notifications, so there this sleeps and returns False: poll.
        A broken LISTEN connection is dropped, so the next call reconnects.
        """
        if not self.is_postgres:
            select.select([], [], [], timeout)
            return False
        listener = self._listen()
        try:
            for _ in listener.notifies(timeout=timeout, stop_after=1):
                return True
        except Exception:
            self._drop_listener()
            raise
        return False

    def _listen(self) -> Any:
        if self._listener is None:
            import psycopg

            conn = psycopg.connect(**postgres_connect_args(self.env), autocommit=True)
            conn.execute(f'LISTEN "{self.recorder.channel_name}"')
            self._listener = conn
        return self._listener

    def _drop_listener(self) -> None:
        if self._listener is not None:
            try:
                self._listener.close()
            finally:
                self._listener = None

    def close(self) -> None:
        """Release connections."""
        self._drop_listener()
        self.app.close()
