"""Appends to a large log with random task ids and with the runtime's time-ordered ones.

The log's rows are keyed by (task id, version). This bench fills a SQLite file with
``base_tasks`` tasks of five rows each under random ids (a log as earlier tierlogs
wrote it), then, on copies of it, times group commits of ``batch`` tasks whose ids come
from ``uuid.uuid4`` or from ``tierlog.adapters.runtime.ids.new_task_id``, in turns,
``repeats`` times each, with the page cache ``serve`` gives SQLite (2 MB). Rows are the
size of a task's events (550-byte payloads); the schema is the log's.
"""

from __future__ import annotations

import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from tierlog.adapters.runtime.ids import new_task_id

_SCHEMA = (
    "CREATE TABLE stored_events (originator_id TEXT, originator_version INTEGER, "
    "topic TEXT, state BLOB, PRIMARY KEY (originator_id, originator_version))"
)
_INSERT = "INSERT INTO stored_events VALUES (?,?,?,?)"
_PAYLOAD = b"x" * 550
ROWS_PER_TASK = 5


def _task_rows(ids: Callable[[], UUID], tasks: int) -> list[tuple[str, int, str, bytes]]:
    rows = []
    for _ in range(tasks):
        key = ids().hex
        rows += [(key, v, "TaskEvent", _PAYLOAD) for v in range(1, ROWS_PER_TASK + 1)]
    return rows


def _base_log(path: Path, tasks: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(_SCHEMA)
    for start in range(0, tasks, 10_000):
        conn.execute("BEGIN")
        conn.executemany(_INSERT, _task_rows(uuid.uuid4, min(10_000, tasks - start)))
        conn.execute("COMMIT")
    conn.close()


def _rows_per_s(base: Path, ids: Callable[[], UUID], tasks: int, batch: int) -> float:
    copy = base.with_name("copy.db")
    shutil.copy(base, copy)
    conn = sqlite3.connect(copy, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA cache_size=-2000")
    commits = [_task_rows(ids, batch) for _ in range(tasks // batch)]
    started = time.perf_counter()
    for rows in commits:
        conn.execute("BEGIN")
        conn.executemany(_INSERT, rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    copy.unlink()
    return sum(len(rows) for rows in commits) / elapsed


def run_task_ids_bench(
    base_tasks: int = 200_000, tasks: int = 40_000, batch: int = 1000, repeats: int = 3
) -> dict[str, Any]:
    """Rows/s appended under each kind of id (medians), and their ratio per turn."""
    with tempfile.TemporaryDirectory(prefix="tierlog-task-ids-") as workdir:
        base = Path(workdir) / "base.db"
        _base_log(base, base_tasks)
        random_ids: list[float] = []
        ordered_ids: list[float] = []
        for _ in range(repeats):
            random_ids.append(_rows_per_s(base, uuid.uuid4, tasks, batch))
            ordered_ids.append(_rows_per_s(base, new_task_id, tasks, batch))
    return {
        "base_rows": base_tasks * ROWS_PER_TASK,
        "appended_rows": tasks * ROWS_PER_TASK,
        "batch_tasks": batch,
        "repeats": repeats,
        "random_ids_rows_per_s_median": round(statistics.median(random_ids)),
        "time_ordered_ids_rows_per_s_median": round(statistics.median(ordered_ids)),
        "ratio_median": round(
            statistics.median(o / r for o, r in zip(ordered_ids, random_ids, strict=True)), 2
        ),
    }
