"""``scripts/bench_task_ids.py``'s bench runs both kinds of id in turns and reports them
(its figures are the bench's to report, not a test's to judge)."""

from __future__ import annotations

from tierlog.adapters.tools.bench_task_ids import run_task_ids_bench


def test_the_task_ids_bench_reports_both_kinds_of_id():
    figures = run_task_ids_bench(base_tasks=200, tasks=100, batch=20, repeats=2)
    assert figures["base_rows"] == 1000 and figures["appended_rows"] == 500
    assert figures["random_ids_rows_per_s_median"] > 0
    assert figures["time_ordered_ids_rows_per_s_median"] > 0
    assert figures["ratio_median"] > 0
