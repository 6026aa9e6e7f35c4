"""``tierlog audit``: verify the chain, replay the log checking invariants, and compare
read models rebuilt in a scratch store with the live ones. Streams the log."""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adapters.chain_audit import verify_chain
from adapters.event_log import EventLog
from adapters.projection_runner import ProjectionRunner
from adapters.read_store import ReadStore, read_model_path
from domain.determinism import DeterminismChecker
from domain.invariants import InvariantChecker, Violation
from projections.registry import all_projections


@dataclass
class AuditReport:
    """The verdict: how much was read, and every violation found."""

    events: int = 0
    violations: list[Violation] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """True when nothing is wrong."""
        return not self.violations

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "clean": self.clean,
            "events": self.events,
            "checked": self.checked,
            "violations": [asdict(v) for v in self.violations],
        }


def _table_digests(store: ReadStore) -> dict[str, str]:
    """A SHA-256 per read-model table over its rows in key order, streamed in chunks
    (a full copy of a million-row table in memory is what this avoids)."""
    digests: dict[str, str] = {}
    for table in (t for p in all_projections() for t in p.tables):
        digest = hashlib.sha256()
        for rows in store.chunks(f"SELECT * FROM {table} ORDER BY 1, 2"):
            for row in rows:
                digest.update(repr(tuple(row)).encode())
        digests[table] = digest.hexdigest()
    return digests


def _compare_projections(log: EventLog, report: AuditReport) -> None:
    """Rebuild every read model in a scratch store and compare with the live ones."""
    if log.sqlite_path is None or not read_model_path(log.sqlite_path).exists():
        report.checked.append("projections: skipped (no live SQLite read models beside the log)")
        return
    live = ReadStore(log)
    live_runner = ProjectionRunner(log, live)
    live_runner.run_until_caught_up()
    head = log.head()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = ReadStore(log, sqlite_path=Path(tmp) / "scratch.read.db")
        ProjectionRunner(log, scratch).rebuild()
        live_tables, scratch_tables = _table_digests(live), _table_digests(scratch)
        scratch.close()
    live.close()
    for table, digest in live_tables.items():
        if digest != scratch_tables[table]:
            report.violations.append(
                Violation(head, table, "projections_match", f"live {table} differs from a rebuild")
            )
    report.checked.append("projections: rebuilt in a scratch store and compared")


def audit(
    log: EventLog, *, progress: Callable[[int, int], None] | None = None, batch: int = 5000
) -> AuditReport:
    """Verify the chain, check the invariants while replaying, compare projections."""
    report = AuditReport()
    head = log.head()
    started = time.perf_counter()
    for found in verify_chain(log, batch):
        report.violations.append(Violation(found.position, "log", found.rule, found.detail))
    report.checked.append("hash chain")
    report.timings["chain"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    checker = InvariantChecker()
    replay = DeterminismChecker()
    for position, event in log.iter_events(batch=batch):
        report.violations.extend(checker.check(position, event))
        report.violations.extend(replay.check(position, event))
        report.events += 1
        if progress is not None and report.events % batch == 0:
            progress(report.events, head)
    report.checked.append("invariants")
    report.checked.append("routing decisions recomputed")
    report.timings["replay"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    _compare_projections(log, report)
    report.timings["projections"] = round(time.perf_counter() - started, 2)
    return report
