"""Appends to a large log with random task ids and with the runtime's time-ordered ones.

The log's rows are keyed by (task id, version). On a fresh SQLite file holding
``base_tasks`` tasks of five rows each under random ids (a log as earlier tierlogs wrote
it, inserted untimed), this times group commits of ``batch`` tasks whose ids come from
``uuid.uuid4`` or from ``tierlog.adapters.runtime.ids.new_task_id``, in turns,
``repeats`` times each: ``tierlog bench``'s raw SQLite baseline (the log's schema, WAL,
SQLite's default 2 MB page cache), with rows the size of a task's events (550 bytes).
"""

from __future__ import annotations

import statistics
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from tierlog.adapters.runtime.ids import new_task_id
from tierlog.adapters.tools.bench import _raw_sqlite_rate

_PAYLOAD = b"x" * 550
ROWS_PER_TASK = 5


def _task_rows(ids: Callable[[], UUID], tasks: int) -> list[tuple[str, int, str, bytes]]:
    rows = []
    for _ in range(tasks):
        key = ids().hex
        rows += [(key, v, "TaskEvent", _PAYLOAD) for v in range(1, ROWS_PER_TASK + 1)]
    return rows


def run_task_ids_bench(
    base_tasks: int = 200_000, tasks: int = 40_000, batch: int = 1000, repeats: int = 3
) -> dict[str, Any]:
    """Rows/s appended under each kind of id (medians), and their ratio per turn."""
    base = _task_rows(uuid.uuid4, base_tasks)
    random_ids: list[float] = []
    ordered_ids: list[float] = []
    with tempfile.TemporaryDirectory(prefix="tierlog-task-ids-") as workdir:
        for turn in range(repeats):
            for ids, rates in ((uuid.uuid4, random_ids), (new_task_id, ordered_ids)):
                path = Path(workdir) / f"{len(rates)}-{turn}.db"
                rows = _task_rows(ids, tasks)
                rates.append(_raw_sqlite_rate(path, rows, batch * ROWS_PER_TASK, before=base))
                path.unlink()
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
