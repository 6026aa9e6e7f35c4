"""``scripts/bench_backlog.py``'s bench runs and reports a commit's time as the backlog
grows (its figures are the bench's to report, not a test's to judge)."""

from __future__ import annotations

from tierlog.adapters.tools.bench_backlog import run_backlog_bench


def test_the_backlog_bench_reports_each_tenth_of_its_run():
    figures = run_backlog_bench(batches=10, batch=20)
    assert figures["batch"] == 20
    assert list(figures["ms_per_commit_at_queued"]) == [str(20 * n) for n in range(1, 11)]
    assert figures["first_tenth_ms_median"] > 0 and figures["last_tenth_ms_median"] > 0


def test_the_backlog_bench_beside_agents_that_cannot_take_its_tasks():
    figures = run_backlog_bench(batches=10, batch=20, idle_agents=3)
    assert figures["idle_agents"] == 3
    assert list(figures["ms_per_commit_at_queued"]) == [str(20 * n) for n in range(1, 11)]
    assert figures["last_tenth_ms_median"] > 0
