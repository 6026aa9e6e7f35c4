"""The audit's projection check: every read model, rebuilt from the log in a scratch
store, equals the live one row for row.

First the fast path (``adapters.audit.digest``): the live tables are digested in
one snapshot, the log is folded in memory up to the positions they had reached, and
the digests are compared. Only when a table differs does the exact path run: the
read models are rebuilt in a scratch store (a temporary SQLite file, or a temporary
schema in the same PostgreSQL database) by the same runner as the live ones, up to the
live positions, and compared with a keyed join inside one read transaction, which
names the rows that differ. A runner moving the live models meanwhile cannot produce
a false difference: the scratch copy is caught up and compared again.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec

from tierlog.adapters.audit.digest import (
    MISSING,
    DigestFold,
    Digests,
    SealedFolds,
    feed_from_log,
    live_digests,
)
from tierlog.adapters.readside.read_store import IDENTITY_KEY, ReadStore, read_model_path
from tierlog.adapters.readside.runner import ProjectionRunner
from tierlog.adapters.store.event_log import EventLog, postgres_connect_args
from tierlog.domain.replay.invariants import Violation
from tierlog.projections.base import Projection, Table
from tierlog.projections.registry import all_projections

# How often the scratch copy chases live read models that a runner keeps moving.
_ATTEMPTS = 50
_EXAMPLES = 3


@dataclass
class ProjectionCheck:
    """What the check compared and what differed."""

    violations: list[Violation] = field(default_factory=list)
    checked: str = ""
    rows_compared: int = 0
    seconds: float = 0.0
    # A clean check's folds, each at its live position (for the audit's seal).
    sealed: SealedFolds = field(default_factory=dict)
    # Each projection resumed from a seal, and the sealed position it folded on from.
    resumed: dict[str, int] = field(default_factory=dict)


class _Comparer(Protocol):
    """One store's way to read live positions and diff a live table with its scratch copy."""

    def positions(self) -> dict[str, int] | None:
        """Each live projection's position (None when there are no live read models)."""
        ...

    def scratch_positions(self) -> dict[str, int]:
        """Each scratch projection's position, in the same read transaction."""
        ...

    def differences(self, table: Table) -> tuple[int, int, list[str], int]:
        """Live rows missing from or different in scratch, rows only in scratch, a few
        of their keys, and how many live rows there are."""
        ...

    def snapshot(self) -> AbstractContextManager[None]:
        """One read transaction over live and scratch tables."""
        ...


def _key_text(value: Any) -> str:
    """A key as a finding names it: a task id's 16 bytes as its UUID text."""
    if isinstance(value, bytes | memoryview) and len(value) == 16:
        return str(uuid.UUID(bytes=bytes(value)))
    return str(value)


def _positions(rows: list[tuple[Any, ...]]) -> dict[str, int]:
    return {str(name): int(pos) for name, pos in rows if name != IDENTITY_KEY}


def _diff_queries(live: str, scratch: str, table: Table, distinct: str) -> tuple[str, str]:
    """Keys of live rows missing from or different in scratch, and keys only in scratch.

    A join on the primary key rather than ``EXCEPT``: both sides are keyed, and
    ``EXCEPT`` sorts every whole row (ten times slower on a million-row table).
    """
    on = " AND ".join(f"s.{k} = l.{k}" for k in table.key)
    differs = " OR ".join(
        f"l.{c} {distinct} s.{c}" for c in table.column_names if c not in table.key
    )
    first = table.key[0]
    changed = (
        f"SELECT l.{first} FROM {live}.{table.name} AS l LEFT JOIN {scratch}.{table.name} AS s"
        f" ON {on} WHERE s.{first} IS NULL OR {differs}"
    )
    extra = (
        f"SELECT s.{first} FROM {scratch}.{table.name} AS s LEFT JOIN {live}.{table.name} AS l"
        f" ON {on} WHERE l.{first} IS NULL"
    )
    return changed, extra


class _SQLiteComparer:
    def __init__(self, live_path: Path, scratch_path: Path) -> None:
        self.conn = sqlite3.connect(scratch_path.resolve().as_uri(), uri=True, isolation_level=None)
        # Read-only: an audit never writes the live read models.
        self.conn.execute("ATTACH DATABASE ? AS live", (live_path.resolve().as_uri() + "?mode=ro",))

    def positions(self) -> dict[str, int] | None:
        found = self.conn.execute(
            "SELECT 1 FROM live.sqlite_master WHERE type = 'table' AND name = 'rm_positions'"
        ).fetchone()
        if found is None:
            return None
        return _positions(
            self.conn.execute("SELECT name, position FROM live.rm_positions").fetchall()
        )

    def scratch_positions(self) -> dict[str, int]:
        return _positions(
            self.conn.execute("SELECT name, position FROM main.rm_positions").fetchall()
        )

    def differences(self, table: Table) -> tuple[int, int, list[str], int]:
        changed, extra = _diff_queries("live", "main", table, "IS NOT")
        run = self.conn.execute
        return (
            int(run(f"SELECT COUNT(*) FROM ({changed})").fetchone()[0]),
            int(run(f"SELECT COUNT(*) FROM ({extra})").fetchone()[0]),
            [_key_text(r[0]) for r in run(f"{changed} UNION {extra} ORDER BY 1 LIMIT {_EXAMPLES}")],
            int(run(f"SELECT COUNT(*) FROM live.{table.name}").fetchone()[0]),
        )

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


class _PostgresComparer:
    def __init__(self, log: EventLog, scratch_schema: str) -> None:
        import psycopg

        self.live = log.env["POSTGRES_SCHEMA"]
        self.scratch = scratch_schema
        self.conn = psycopg.connect(**postgres_connect_args(log.env), autocommit=True)

    def positions(self) -> dict[str, int] | None:
        found = self.conn.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s"
            " AND table_name = 'rm_positions'",
            (self.live,),
        ).fetchone()
        if found is None:
            return None
        return _positions(
            self.conn.execute(f'SELECT name, position FROM "{self.live}".rm_positions').fetchall()
        )

    def scratch_positions(self) -> dict[str, int]:
        return _positions(
            self.conn.execute(
                f'SELECT name, position FROM "{self.scratch}".rm_positions'
            ).fetchall()
        )

    def differences(self, table: Table) -> tuple[int, int, list[str], int]:
        changed, extra = _diff_queries(
            f'"{self.live}"', f'"{self.scratch}"', table, "IS DISTINCT FROM"
        )

        def one(sql: str) -> int:
            row = self.conn.execute(sql).fetchone()
            return int(row[0]) if row else 0

        return (
            one(f"SELECT COUNT(*) FROM ({changed}) AS d"),
            one(f"SELECT COUNT(*) FROM ({extra}) AS d"),
            [
                _key_text(r[0])
                for r in self.conn.execute(
                    f"{changed} UNION {extra} ORDER BY 1 LIMIT {_EXAMPLES}"
                ).fetchall()
            ],
            one(f'SELECT COUNT(*) FROM "{self.live}".{table.name}'),
        )

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.execute(f'DROP SCHEMA IF EXISTS "{self.scratch}" CASCADE')
        self.conn.close()


def _catch_up(
    log: EventLog,
    scratch: ReadStore,
    projections: list[Projection],
    live: dict[str, int],
    batch: int,
) -> None:
    """Fold the scratch copy of each projection up to its live position."""
    by_position: dict[int, list[Projection]] = {}
    for projection in projections:
        by_position.setdefault(live[projection.name], []).append(projection)
    for position, group in sorted(by_position.items()):
        runner = ProjectionRunner(log, scratch, group, batch=batch, indexes=False)
        runner.start()
        if min(runner.positions().values()) > position:
            runner.rebuild(stop=position)  # the live models went back: start again
        else:
            runner.run_until_caught_up(stop=position)


def _compare(
    comparer: _Comparer,
    log: EventLog,
    scratch: ReadStore,
    projections: list[Projection],
    batch: int,
    result: ProjectionCheck,
) -> bool:
    """Compare row by row; False when the live models kept moving out of reach."""
    live_positions = comparer.positions()
    if live_positions is None:
        result.checked = "projections: skipped (the log has no live read models)"
        return True
    projections = [p for p in projections if p.name in live_positions]
    for _attempt in range(_ATTEMPTS):
        with comparer.snapshot():
            live_positions = comparer.positions() or {}
            mine = comparer.scratch_positions()
            if all(mine.get(p.name) == live_positions[p.name] for p in projections):
                for projection in projections:
                    at = live_positions[projection.name]
                    for table in projection.tables:
                        changed, extra, keys, rows = comparer.differences(table)
                        result.rows_compared += rows
                        if changed or extra:
                            result.violations.append(
                                Violation(
                                    at,
                                    table.name,
                                    "projections_match",
                                    f"{changed} live rows differ from a rebuild or are"
                                    f" missing from it, {extra} rebuilt rows are not live"
                                    f" (keys such as {', '.join(keys)})",
                                )
                            )
                names = ", ".join(p.name for p in projections)
                result.checked = f"projections: {names} rebuilt in a scratch store and compared"
                return True
        _catch_up(log, scratch, projections, live_positions, batch)
    return False


@dataclass
class PendingCheck:
    """A projection check under way: the live tables' digests, and the in-memory fold
    that must reproduce them (fed by ``check_projections`` or by the audit's replay)."""

    projections: list[Projection]
    live: Digests
    fold: DigestFold
    batch: int
    started: float
    positions: dict[str, int]  # each table's live position (its projection's)


def begin_check(
    log: EventLog,
    *,
    names: Sequence[str] | None = None,
    batch: int = 10_000,
    resume: SealedFolds | None = None,
) -> PendingCheck | ProjectionCheck:
    """Digest the live read models (those ``names``, or all) in one snapshot and set up
    the fold (from the sealed folds in ``resume`` where they can be used); a finished
    ``ProjectionCheck`` when there is nothing to compare."""
    started = time.perf_counter()
    projections = [p for p in all_projections() if names is None or p.name in names]
    live = live_digests(log, [t for p in projections for t in p.tables])
    if live is None:
        return ProjectionCheck(checked="projections: skipped (the log has no live read models)")
    positions, live_tables = live
    projections = [p for p in projections if p.name in positions]
    fold = DigestFold(projections, positions, batch, resume)
    at = {t.name: positions[p.name] for p in projections for t in p.tables}
    return PendingCheck(projections, live_tables, fold, batch, started, at)


def finish_check(log: EventLog, pending: PendingCheck) -> ProjectionCheck:
    """Compare the fold's digests with the live ones; on a difference, find the rows.

    A difference is never let go: read models beyond the log's head, a live table that
    is missing, and a difference whose rows could not be named (the live models kept
    moving) are violations too.
    """
    result = ProjectionCheck(resumed=dict(pending.fold.resumed))
    folded = pending.fold.digests()
    differing = [t for t in folded if folded[t] != pending.live[t]]
    listed = ", ".join(p.name for p in pending.projections)
    result.checked = f"projections: {listed} rebuilt in memory and compared by digest"
    if not differing:
        result.rows_compared = sum(rows for _digest, rows in pending.live.values())
        result.sealed = pending.fold.seal()
    else:
        plain = _report_plain_causes(log, pending, differing, result)
        exact = [
            p
            for p in pending.projections
            if any(t.name in differing for t in p.tables)
            and not any(t.name in plain for t in p.tables)
        ]
        why = "its read model kept moving, or another was broken"
        try:
            named = bool(exact) and _exact(log, exact, pending.batch, result)
        except msgspec.DecodeError:
            # The rebuild reads every event; one that no longer decodes is a finding of
            # the chain check (record_changed), not a reason to stop the audit.
            named, why = False, "an event of the log does not decode: see the chain's findings"
        for table in differing:
            if table not in plain and not named:
                result.violations.append(
                    Violation(
                        pending.positions[table],
                        table,
                        "projections_match",
                        "the live table differs from a rebuild (by digest); its rows could "
                        f"not be named ({why})",
                    )
                )
    result.seconds = time.perf_counter() - pending.started
    return result


def _report_plain_causes(
    log: EventLog, pending: PendingCheck, differing: list[str], result: ProjectionCheck
) -> set[str]:
    """Report the differences with a plain cause: read models beyond the log's head
    (built from another log) and live tables that are missing. Returns those tables."""
    head = log.head()
    plain: set[str] = set()
    for table in differing:
        at = pending.positions[table]
        if pending.live[table] == MISSING:
            detail = "the live table is missing"
        elif at > head:
            detail = f"the read model is at position {at}, beyond the log's head {head}"
        else:
            continue
        plain.add(table)
        result.violations.append(Violation(at, table, "projections_match", detail))
    return plain


def check_projections(
    log: EventLog,
    *,
    names: Sequence[str] | None = None,
    batch: int = 10_000,
    resume: SealedFolds | None = None,
) -> ProjectionCheck:
    """Rebuild the live read models (those ``names``, or all) from the log (or from
    the sealed folds in ``resume``) and compare them with the live ones: by digest,
    then row by row if a digest differs."""
    begun = begin_check(log, names=names, batch=batch, resume=resume)
    if isinstance(begun, ProjectionCheck):
        return begun
    feed_from_log(log, begun.fold)
    return finish_check(log, begun)


def _exact(
    log: EventLog, projections: list[Projection], batch: int, result: ProjectionCheck
) -> bool:
    """The exact comparison in a scratch store, naming the rows that differ; False when
    the live models kept moving out of its reach."""
    if log.is_postgres:
        schema = f"tierlog_audit_{uuid.uuid4().hex[:12]}"
        comparer_pg = _PostgresComparer(log, schema)
        try:
            comparer_pg.conn.execute(f'CREATE SCHEMA "{schema}"')
            scratch = ReadStore(log, postgres_schema=schema, scratch=True)
            try:
                return _compare(comparer_pg, log, scratch, projections, batch, result)
            finally:
                scratch.close()
        finally:
            comparer_pg.close()
    with tempfile.TemporaryDirectory(prefix="tierlog-audit-") as tmp:
        scratch_path = Path(tmp) / "scratch.read.db"
        scratch = ReadStore(log, sqlite_path=scratch_path, scratch=True)
        comparer = _SQLiteComparer(read_model_path(str(log.sqlite_path)), scratch_path)
        try:
            return _compare(comparer, log, scratch, projections, batch, result)
        finally:
            comparer.close()
            scratch.close()


if __name__ == "__main__":
    # The audit's worker process: check one log's projections (from the sealed folds
    # read from stdin, MessagePack), write the result to stdout (MessagePack).
    import sys

    _resume = msgspec.msgpack.decode(sys.stdin.buffer.read() or b"\x80", type=SealedFolds)
    _log = EventLog(sys.argv[1], read_only=True)  # the audit never writes the log
    try:
        _names = sys.argv[2:] or None
        _found = check_projections(_log, names=_names, resume=_resume)
        sys.stdout.buffer.write(msgspec.msgpack.encode(_found))
    finally:
        _log.close()
