"""``tierlog bench --http`` at a small scale: every part runs against a real server and
reports its figures (the figures themselves are for a quiet machine, not a test)."""

from __future__ import annotations

from tierlog.adapters.tools.bench_http import run_http_bench


def test_the_http_bench_reports_every_part_with_medians_of_its_runs():
    lines: list[str] = []
    figures = run_http_bench(
        submissions=60,
        agents=30,
        wake_tasks=20,
        pollers=5,
        poll_seconds=0.3,
        queued=20,
        batch_tasks=450,
        batch=100,
        repeats=2,
        progress=lines.append,
    )
    assert figures["repeats"] == 2 and len(lines) == 2
    wake = figures["long_poll_wake"]
    assert wake["agents_polling"] == 30 and len(wake["runs"]) == 2
    assert len(wake["in_step"]["runs"]) == 2 and wake["in_step"]["p99_ms_median"] > 0
    assert all(run["n"] >= 20 for run in wake["runs"])
    assert 0 < wake["p50_ms_median"] <= wake["p99_ms_median"]
    assert figures["http_submissions"]["per_s_median"] > 0
    batches = figures["batch_submissions"]
    assert batches["batch"] == 100 and batches["tasks_per_s_median"] > 0
    assert all(run["tasks"] == 450 for run in batches["runs"])
    assert figures["queue_read"]["paced"]["pollers"] == 5
