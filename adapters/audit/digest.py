"""The projection check's fast path: read models folded in memory, compared by digest.

Each table gets a multiset digest: the sum, modulo 2**128, of a BLAKE2b-128 hash of
every row's values in column order (MessagePack). Sums do not depend on row order, so the live
table can be streamed in any order and the in-memory copy can release rows early: a
task's rows are added to the digest and dropped once the task has finished
(completed or cancelled, states nothing leaves) and one more batch has passed, which
keeps memory flat on a long log. The same projection code folds both copies.

A digest that differs says only *that* a table differs; the caller then runs the
exact comparison (a scratch store and a keyed join) to say which rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from hashlib import blake2b
from pathlib import Path
from typing import Any

import msgspec

from tierlog.adapters.readside.read_store import IDENTITY_KEY, read_model_path
from tierlog.adapters.runtime.process_memory import cyclic_gc_paused
from tierlog.adapters.store.event_log import EventLog, RawRow, postgres_connect_args
from tierlog.domain import events as ev
from tierlog.domain.events import DomainEvent
from tierlog.projections.base import Fold, Key, Projection, Row, Table, fold_version

_MODULUS = 1 << 128
# Task tables are keyed by the task id alone; their rows can be released when it ends.
_TASK_KEY = ("task_id",)
_FINISHED = (ev.TaskCompleted, ev.TaskCancelled)

# Per table: (digest, rows).
Digests = dict[str, tuple[int, int]]
# The digest of a live table that does not exist (no real digest has a negative count).
MISSING = (0, -1)


_pack = msgspec.msgpack.Encoder().encode


class TableSeal(msgspec.Struct, gc=False):
    """One table of an in-memory fold, as data: the digest and row count of the rows
    released so far, and the rows still held (values in column order)."""

    digest: bytes  # 16 bytes, big-endian
    count: int
    rows: list[list[Any]]


# Each projection's sealed fold, encoded (``ProjectionSeal``): they pass from a worker to
# the seal, and from the seal to a worker, without being decoded on the way.
SealedFolds = dict[str, msgspec.Raw]


class ProjectionSeal(msgspec.Struct, gc=False):
    """One projection's in-memory fold after ``position`` (its live position when the
    audit that sealed it compared it clean), under fold ``version``: an incremental
    audit folds on from there. ``finishing``: tasks that finished at these positions
    whose rows are not released yet."""

    position: int
    version: int
    tables: dict[str, TableSeal]
    finishing: list[tuple[int, bytes]]


def row_digest(values: tuple[Any, ...]) -> int:
    """The 128-bit hash of one row's values (column order), as an integer.

    The values are packed with MessagePack, which keeps ``1`` and ``1.0`` apart and
    is several times cheaper than ``repr``."""
    return int.from_bytes(blake2b(_pack(values), digest_size=16).digest(), "big")


class DigestRows:
    """An in-memory scratch store (``projections.base.Rows``) that digests what it drops."""

    def __init__(self, tables: Iterable[Table], limits: dict[str, int] | None = None) -> None:
        self._tables = {t.name: t for t in tables}
        self._rows: dict[str, dict[Key, Row]] = {name: {} for name in self._tables}
        self._digests: dict[str, list[int]] = {name: [0, 0] for name in self._tables}
        self._task_tables = [t for t in self._tables.values() if t.key == _TASK_KEY]
        # Per table: the last position its projection folds (``release_finished``).
        self._limits = limits or {}

    def get(self, table: Table, key: Key) -> Row | None:
        """The row with ``key``, or None."""
        return self._rows[table.name].get(key)

    def put(self, table: Table, row: Row) -> None:
        """Insert ``row`` or replace the row with its key."""
        self._rows[table.name][table.key_of(row)] = row

    def change(self, table: Table, key: Key) -> Row | None:
        """The row with ``key``, to change in place, or None."""
        return self._rows[table.name].get(key)

    def add(self, table: Table, key: Key, by: int) -> None:
        """Add ``by`` to the counter row with ``key`` (a new row when there is none)."""
        rows = self._rows[table.name]
        row = rows.get(key)
        if row is None:
            rows[key] = [*key, by]
        else:
            row[-1] += by

    def delete(self, table: Table, key: Key) -> None:
        """Remove the row with ``key``: a row the fold deleted is in no digest."""
        self._rows[table.name].pop(key, None)

    def release(self, task_ids: Iterable[bytes]) -> None:
        """Add the rows of finished tasks to the digests and drop them."""
        task_ids = list(task_ids)
        for table in self._task_tables:
            self.release_from(table, task_ids)

    def release_finished(self, finished: Sequence[tuple[int, bytes]]) -> None:
        """Release the rows of tasks that finished at the given positions, each only
        from the tables whose projection folds that far: a row of a task that finished
        beyond its projection's window is not final there, and a seal keeps it."""
        for table in self._task_tables:
            limit = self._limits.get(table.name)
            ids = [t for at, t in finished if limit is None or at <= limit]
            if ids:
                self.release_from(table, ids)

    def release_from(self, table: Table, task_ids: Iterable[bytes]) -> None:
        """Add the rows of ``task_ids`` in ``table`` to its digest and drop them."""
        rows, digest = self._rows[table.name], self._digests[table.name]
        for task_id in task_ids:
            row = rows.pop((task_id,), None)
            if row is not None:
                digest[0] += row_digest(tuple(row))
                digest[1] += 1

    def table_state(self, table: Table) -> TableSeal:
        """One table's folded rows and digest, as data (for a seal)."""
        total, count = self._digests[table.name]
        rows = [list(row) for row in self._rows[table.name].values()]
        return TableSeal(digest=(total % _MODULUS).to_bytes(16, "big"), count=count, rows=rows)

    def restore_table(self, table: Table, state: TableSeal) -> None:
        """Put back what ``table_state`` gave."""
        held = self._rows[table.name]
        for values in state.rows:
            row = list(values)
            held[table.key_of(row)] = row
        self._digests[table.name] = [int.from_bytes(state.digest, "big"), state.count]

    def digests(self) -> Digests:
        """Every table's digest and row count, the rows still held included."""
        result: Digests = {}
        for name in self._tables:
            total, count = self._digests[name]
            for row in self._rows[name].values():
                total += row_digest(tuple(row))
                count += 1
            result[name] = (total % _MODULUS, count)
        return result


# Rows read and decoded at a time: small enough to stay in the CPU's caches.
_CHUNK = 1024


def _skip(data: bytes) -> DomainEvent:
    raise AssertionError("never called: marks a topic that is not decoded")


def _events(
    log: EventLog, stop: int, wanted: Callable[[type], bool], after: int = 0
) -> Iterator[list[tuple[int, DomainEvent]]]:
    """The log's events in ``(after, stop]`` whose type is ``wanted``, a chunk at a time. A
    payload that does not decode is left out: the replay half of the audit reports it
    (``event_decodes``)."""
    codec = log.codec
    decoders: dict[str, Callable[[bytes], DomainEvent]] = {}

    def learn(topic: str) -> Callable[[bytes], DomainEvent]:
        event_type = codec.event_type(topic)
        found = decoders[topic] = (
            codec.decoder(topic) if event_type is None or wanted(event_type) else _skip
        )
        return found

    for rows in log.iter_raw(after, stop, _CHUNK):
        try:
            yield [
                (p, decode(s))
                for p, _id, _version, t, s in rows
                if (decode := decoders.get(t) or learn(t)) is not _skip
            ]
        except Exception:
            yield list(_decodable(rows, lambda t: decoders.get(t) or learn(t)))


def _decodable(
    rows: Sequence[RawRow], decoder: Callable[[str], Callable[[bytes], DomainEvent]]
) -> Iterator[tuple[int, DomainEvent]]:
    for position, _id, _version, topic, state in rows:
        decode = decoder(topic)
        if decode is _skip:
            continue
        try:
            yield position, decode(state)
        except Exception:  # a forged or damaged payload, of any shape
            continue


class DigestFold:
    """Folds projections in memory, chunk by chunk, each up to its own position;
    ``digests`` gives what the live tables at those positions must digest to.

    Each projection starts from position 0, or (``resume``) from the fold a seal kept
    of it, when that was folded by the same fold version and no further than the live
    position: ``start`` is then the last position before the events it needs.
    Fed by ``feed_from_log``, or by the audit's replay pass, which decodes every event
    anyway.
    """

    def __init__(
        self,
        projections: Sequence[Projection],
        positions: dict[str, int],
        batch: int,
        resume: SealedFolds | None = None,
    ) -> None:
        self.projections = list(projections)
        self.positions = {p.name: positions[p.name] for p in projections}
        limits = {t.name: positions[p.name] for p in projections for t in p.tables}
        self.rows = DigestRows((t for p in projections for t in p.tables), limits)
        self.stop = max(self.positions.values(), default=0)
        self.resumed: dict[str, int] = {}  # projection -> the sealed position it went on from
        # Finished tasks are released a batch late: a command's trailing events (a timer
        # cancelled after its task was) still find the rows.
        self._ending: list[tuple[int, bytes]] = []
        self._finished: list[tuple[int, bytes]] = []
        windows: list[tuple[Projection, int, int | None]] = []
        for p in projections:
            sealed = _sealed_fold((resume or {}).get(p.name))
            usable = (
                sealed is not None
                and sealed.version == fold_version(p)
                and sealed.position <= positions[p.name]
                and {t.name for t in p.tables} <= set(sealed.tables)
            )
            if sealed is not None and usable:
                for table in p.tables:
                    self.rows.restore_table(table, sealed.tables[table.name])
                self._ending.extend(sealed.finishing)
                self.resumed[p.name] = sealed.position
            windows.append((p, self.resumed.get(p.name, 0), positions[p.name]))
        self.start = min((after for _, after, _ in windows), default=0)
        self._fold = Fold(windows)
        self._batch = batch
        self._since_release = 0

    def handles(self, event_type: type) -> bool:
        """Whether the fold needs events of ``event_type`` (others need not be decoded)."""
        return issubclass(event_type, _FINISHED) or self._fold.handles(event_type)

    def feed(self, chunk: Sequence[tuple[int, DomainEvent]]) -> None:
        """Fold the next events, in log order."""
        self._fold.apply(self.rows, chunk)
        self._finished.extend(
            (position, event.originator_id.bytes)
            for position, event in chunk
            if isinstance(event, _FINISHED)
        )
        self._since_release += len(chunk)
        if self._since_release >= self._batch:
            self.rows.release_finished(self._ending)
            self._ending, self._finished, self._since_release = self._finished, [], 0

    def digests(self) -> Digests:
        """Every table's digest and row count."""
        return self.rows.digests()

    def seal(self) -> SealedFolds:
        """Each projection's fold, encoded, at its position (once every event up to it
        has been fed)."""
        pending = self._ending + self._finished
        sealed: SealedFolds = {}
        for p in self.projections:
            at = self.positions[p.name]
            fold = ProjectionSeal(
                position=at,
                version=fold_version(p),
                tables={t.name: self.rows.table_state(t) for t in p.tables},
                finishing=[(f, task) for f, task in pending if f <= at],
            )
            sealed[p.name] = msgspec.Raw(_pack(fold))
        return sealed


_projection_seal = msgspec.msgpack.Decoder(ProjectionSeal)


def _sealed_fold(raw: msgspec.Raw | None) -> ProjectionSeal | None:
    """A sealed fold, or None (none, or one that does not decode: folded from 0)."""
    if raw is None:
        return None
    try:
        return _projection_seal.decode(raw)
    except msgspec.MsgspecError:
        return None


def feed_from_log(log: EventLog, fold: DigestFold) -> None:
    """Feed ``fold`` every event it needs, read and decoded from the log."""
    # Rows are plain dicts that never form cycles; with the collector on, each of its
    # passes would walk every row held.
    with cyclic_gc_paused():
        for chunk in _events(log, fold.stop, fold.handles, fold.start):
            fold.feed(chunk)


def _digest_rows(rows: Iterable[Sequence[Any]]) -> tuple[int, int]:
    total = count = 0
    for row in rows:
        total += row_digest(tuple(row))
        count += 1
    return total % _MODULUS, count


def _select(table: Table, schema: str = "") -> str:
    return f"SELECT {', '.join(table.column_names)} FROM {schema}{table.name}"


def live_digests(log: EventLog, tables: Sequence[Table]) -> tuple[dict[str, int], Digests] | None:
    """The live read models' positions and the digests of ``tables``, read in one
    snapshot (None when the log has no live read models)."""
    if log.is_postgres:
        return _live_postgres(log, tables)
    path = read_model_path(str(log.sqlite_path))
    if not path.exists():
        return None
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        conn.execute("BEGIN")
        if not conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rm_positions'"
        ).fetchone():
            return None
        positions = {
            str(name): int(pos)
            for name, pos in conn.execute("SELECT name, position FROM rm_positions")
            if name != IDENTITY_KEY
        }
        present = {
            str(name)
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        digests = {
            t.name: _digest_rows(_chunked(conn.execute(_select(t))))
            if t.name in present
            else MISSING
            for t in tables
        }
        conn.execute("COMMIT")
        return positions, digests
    finally:
        conn.close()


def _chunked(cursor: Any) -> Iterator[Sequence[Any]]:
    while rows := cursor.fetchmany(5000):
        yield from rows


def _live_postgres(log: EventLog, tables: Sequence[Table]) -> tuple[dict[str, int], Digests] | None:
    import psycopg

    schema = log.env["POSTGRES_SCHEMA"]
    with psycopg.connect(**postgres_connect_args(log.env)) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if not conn.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s"
            " AND table_name = 'rm_positions'",
            (schema,),
        ).fetchone():
            return None
        positions = {
            str(name): int(pos)
            for name, pos in conn.execute(f'SELECT name, position FROM "{schema}".rm_positions')
            if name != IDENTITY_KEY
        }
        present = {
            str(name)
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            )
        }
        digests: Digests = {}
        for table in tables:
            if table.name not in present:
                digests[table.name] = MISSING
                continue
            with conn.cursor(name="tierlog_audit_digest") as cursor:
                cursor.itersize = 5000
                cursor.execute(_select(table, f'"{schema}".'))
                digests[table.name] = _digest_rows(cursor)
        return positions, digests
