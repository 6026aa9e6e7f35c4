"""The read side under faults found in review: several runners, a replaced log (refused),
a dropped PostgreSQL connection, a manual retry after an escalation."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import psycopg
import pytest
from wiring import runner_on, runtime_on

from tierlog.adapters.readside.lineage import keep_aside
from tierlog.adapters.readside.read_store import ReadStore
from tierlog.adapters.store.event_log import EventLog
from tierlog.adapters.store.lineage import ReplacedLogError
from tierlog.domain import commands as cmd
from tierlog.domain.clock import VirtualClock
from tierlog.domain.config import SchedulerConfig


def _fill(url: str, n: int, word: str) -> None:
    runtime = runtime_on(url, SchedulerConfig(), VirtualClock())
    runtime.execute_batch(
        [(cmd.SubmitTask(description=f"{word} {i}", complexity_tier="complex")) for i in range(n)]
    )
    runtime.log.close()


def test_two_runners_on_one_read_store_apply_each_event_once(new_store):
    url = new_store()
    _fill(url, 300, "task")
    runners = [runner_on(url, projection_batch=7) for _ in range(2)]
    threads = [threading.Thread(target=r.run_until_caught_up) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    head = runners[0].log.head()
    counters = dict(
        ((n, label), v)
        for n, label, v in runners[0].store.query("SELECT name, label, value FROM rm_tel_counters")
    )
    assert counters[("events", "")] == head
    assert runners[0].store.query("SELECT COUNT(*) FROM rm_tasks")[0][0] == 300
    for runner in runners:
        runner.close()


def test_read_models_of_a_replaced_log_are_refused_then_kept_aside_on_request(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'tierlog.db'}"
    _fill(url, 20, "old")
    runner = runner_on(url)
    runner.run_until_caught_up()
    runner.close()
    for leftover in tmp_path.glob("tierlog.db*"):
        leftover.unlink()  # the operator starts a new log; tierlog.read.db stays
    _fill(url, 30, "new")
    with pytest.raises(ReplacedLogError, match="do not match the log there"):
        runner_on(url)  # built from another log: refused, not refolded
    kept = keep_aside(url, "20260101T000000Z")
    assert kept.endswith("tierlog.read.db.replaced-20260101T000000Z")
    old = sqlite3.connect(kept).execute("SELECT description FROM rm_tasks").fetchall()
    assert len(old) == 20 and all(d.startswith("old") for (d,) in old)
    runner = runner_on(url)  # a fresh read store, folded from this log
    runner.run_until_caught_up()
    descriptions = [row[0] for row in runner.store.query("SELECT description FROM rm_tasks")]
    assert len(descriptions) == 30 and all(d.startswith("new") for d in descriptions)
    runner.close()


@pytest.mark.postgres
def test_a_dropped_postgres_connection_is_replaced(pg_url):
    _fill(pg_url, 5, "task")
    log = EventLog(pg_url)
    store = ReadStore(log)
    runner = runner_on(log, store=store)
    runner.run_until_caught_up()
    pid = store.query("SELECT pg_backend_pid()")[0][0]
    with psycopg.connect(
        dbname=log.env["POSTGRES_DBNAME"],
        host=log.env["POSTGRES_HOST"],
        user=log.env["POSTGRES_USER"],
        autocommit=True,
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError):
        store.query("SELECT 1")  # the operation that finds it dropped fails...
    assert store.query("SELECT COUNT(*) FROM rm_tasks")[0][0] == 5  # ...the next reconnects
    runner.close()


def test_telemetry_tier_returns_to_the_own_tier_on_manual_retry(sqlite_url):
    clock = VirtualClock()
    config = SchedulerConfig(fallback_wait_s=5, task_ttl_s=60)
    runtime = runtime_on(sqlite_url, config, clock)
    task = runtime.execute(
        cmd.SubmitTask(description="write tests", complexity_tier="standard")
    ).task_id
    clock.advance(5)
    runtime.tick()  # escalated to complex; no agent takes it
    clock.advance(60)
    runtime.tick()  # dead-lettered by its TTL
    runtime.execute(cmd.RetryTask(task_id=task))
    runner = runner_on(sqlite_url)
    runner.run_until_caught_up()
    rows = runner.store.fetch("SELECT state, tier FROM rm_tel_tasks")
    assert rows == [{"state": "queued", "tier": "standard"}]
    assert runtime.state.tasks[task].effective_tier == "standard"
    runner.close()
    runtime.log.close()
