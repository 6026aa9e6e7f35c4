"""Read models on real stores: rebuild equality, exactly-once resume after a kill, lag."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wiring import runner_on, runtime_on

from tierlog.adapters.readside.read_store import ReadStore, telemetry_summary
from tierlog.adapters.store.event_log import EventLog
from tierlog.adapters.tools.demo import run_demo
from tierlog.domain import commands as cmd
from tierlog.projections.registry import all_projections

WORKER = Path(__file__).with_name("projection_worker.py")


def _dump(store: ReadStore) -> dict[str, list[tuple[object, ...]]]:
    tables = [t.name for p in all_projections() for t in p.tables]
    return {t: sorted(map(tuple, store.query(f"SELECT * FROM {t}")), key=repr) for t in tables}


@pytest.fixture
def demo_log(new_store) -> str:
    url = new_store()
    run_demo(url, tasks=300, seed=11)  # the demo builds the read models as it ends
    return url


def test_rebuild_from_zero_gives_identical_tables(demo_log):
    runner = runner_on(demo_log)
    before = _dump(runner.store)
    assert sum(len(rows) for rows in before.values()) > 300
    assert runner.rebuild() == runner.log.head()
    assert _dump(runner.store) == before
    runner.close()


def test_small_batches_give_the_same_tables_as_one_pass(demo_log):
    runner = runner_on(demo_log)
    whole = _dump(runner.store)
    runner.rebuild()
    runner.close()
    runner = runner_on(demo_log, projection_batch=7)
    runner.rebuild()
    assert _dump(runner.store) == whole
    runner.close()


def test_lag_is_reported_and_closes(demo_log):
    log = EventLog(demo_log)
    runner = runner_on(log, projection_batch=100)
    runner.rebuild()
    log.append([])  # nothing
    from tierlog.domain import events as ev
    from tierlog.domain.clock import VirtualClock
    from tierlog.domain.config import SchedulerConfig

    runtime = runtime_on(demo_log, SchedulerConfig(), VirtualClock())
    for i in range(5):
        runtime.execute(cmd.SubmitTask(description=f"late task {i}"))
    lag = runner.lag()
    assert set(lag) == {"tasks", "queue", "agents", "endpoints", "telemetry"}
    assert min(lag.values()) >= 10  # submitted + classified per task, at least
    runner.run_until_caught_up()
    assert set(runner.lag().values()) == {0}
    assert runner.position() == log.head()
    submitted = sum(1 for _, e in log.iter_events() if isinstance(e, ev.TaskSubmitted))
    assert telemetry_summary(runner.store)["tasks"] == submitted
    runner.close()
    runtime.log.close()


def test_a_runner_killed_mid_batch_resumes_with_every_event_applied_once(new_store):
    url = new_store()
    run_demo(url, tasks=1500, seed=5)
    log = EventLog(url)
    runner = runner_on(log)
    reference = _dump(runner.store)
    runner.rebuild()  # start from a clean slate but keep the reference
    with runner.store.transaction() as db:
        for projection in runner.projections:
            for table in projection.tables:
                db.execute(f"DELETE FROM {table.name}")
        db.execute("UPDATE rm_positions SET position = 0")
    killed_at = []
    for delay in (0.1, 0.1, 0.1):
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), url, "3"], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        killed_at.append(runner.position())
    assert any(0 < p < log.head() for p in killed_at), f"no kill landed mid-way: {killed_at}"
    runner.run_until_caught_up()
    assert _dump(runner.store) == reference
    runner.close()


def test_telemetry_summary_is_json_and_counts_the_demo(demo_log):
    runner = runner_on(demo_log)
    summary = telemetry_summary(runner.store)
    json.dumps(summary)
    assert summary["timers"]["started"] >= summary["timers"]["fired"] > 0
    assert sum(summary["assignments_by_target"].values()) > 0
    assert summary["submit_to_assign_ms"]["count"] == sum(summary["assignments_by_target"].values())
    runner.close()
