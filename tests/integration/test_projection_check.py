"""The audit's projection check on real stores: read models rebuilt from the log are
compared with the live ones, by digest first and row by row when a digest differs."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from uuid import UUID

import pytest
from wiring import runner_on, runtime_on

from tierlog.adapters.audit.digest import DigestFold, DigestRows, feed_from_log, row_digest
from tierlog.adapters.audit.projections import check_projections
from tierlog.adapters.audit.run import audit, worker_groups
from tierlog.adapters.readside.read_store import ReadStore
from tierlog.adapters.store.event_log import EventLog
from tierlog.adapters.tools.demo import run_demo
from tierlog.domain import commands as cmd
from tierlog.domain import events as ev
from tierlog.domain.clock import VirtualClock
from tierlog.domain.config import SchedulerConfig
from tierlog.projections.base import STATES, STATUSES
from tierlog.projections.registry import all_projections
from tierlog.projections.tasks import RM_TASKS


@pytest.fixture
def projected(store_url: str) -> Iterator[tuple[EventLog, ReadStore]]:
    """A demo log on each store with live read models caught up."""
    run_demo(store_url, tasks=300, seed=3)
    log = EventLog(store_url)
    runner = runner_on(log)
    runner.run_until_caught_up()
    yield log, runner.store
    runner.close()
    log.close()


def _one_task_id(store: ReadStore) -> bytes:
    """A task id as the tables hold it (its 16 bytes)."""
    return bytes(store.query("SELECT task_id FROM rm_tasks ORDER BY task_id LIMIT 1")[0][0])


def _tamper(store: ReadStore, sql: str, params: tuple[object, ...] = ()) -> None:
    with store.transaction() as db:
        db.execute(sql, params)


def test_live_read_models_equal_to_a_rebuild_pass_by_digest(projected):
    log, store = projected
    result = check_projections(log)
    assert result.violations == []
    assert "compared by digest" in result.checked
    tables = [t.name for p in all_projections() for t in p.tables]
    live_rows = sum(int(store.query(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in tables)
    assert result.rows_compared == live_rows > 300


def test_a_fold_reading_the_log_decodes_only_what_it_folds_and_digests_the_same(projected):
    log, _ = projected
    tasks = [p for p in all_projections() if p.name == "tasks"]
    head = log.head()
    from_log = DigestFold(tasks, {"tasks": head}, batch=100)
    assert not from_log.handles(ev.AgentReserved)  # never decoded by feed_from_log
    assert from_log.handles(ev.TaskCompleted)
    feed_from_log(log, from_log)
    every_event = DigestFold(tasks, {"tasks": head}, batch=100)
    every_event.feed(list(log.iter_events()))
    assert from_log.digests() == every_event.digests()
    submitted = sum(isinstance(e, ev.TaskSubmitted) for _, e in log.iter_events())
    assert from_log.digests()["rm_tasks"][1] == submitted > 0


def test_a_payload_that_does_not_decode_is_left_out_of_the_fold_not_a_crash(sqlite_url):
    run_demo(sqlite_url, tasks=20, seed=5)
    log = EventLog(sqlite_url)
    events = list(log.iter_events())
    # One event the tasks read model folds, in a chunk that also holds types it skips.
    broken = next(p for p, e in events if isinstance(e, ev.TaskCompleted))
    raw = sqlite3.connect(str(log.sqlite_path), isolation_level=None)
    raw.execute("DROP TRIGGER stored_events_no_update")
    raw.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (b"{not json", broken))
    raw.close()
    tasks = [p for p in all_projections() if p.name == "tasks"]
    from_log = DigestFold(tasks, {"tasks": log.head()}, batch=100)
    feed_from_log(log, from_log)
    expected = DigestFold(tasks, {"tasks": log.head()}, batch=100)
    expected.feed([(p, e) for p, e in events if p != broken])
    assert from_log.digests() == expected.digests()
    every_event = DigestFold(tasks, {"tasks": log.head()}, batch=100)
    every_event.feed(events)
    assert from_log.digests() != every_event.digests()  # the event mattered
    log.close()


def test_a_changed_live_row_is_named_with_its_table_and_key(projected):
    log, store = projected
    task_id = _one_task_id(store)
    _tamper(
        store,
        "UPDATE rm_tasks SET state = ?, result = '1' WHERE task_id = ?",
        (STATES.code["cancelled"], task_id),
    )
    result = check_projections(log)
    assert [(v.aggregate_id, v.rule) for v in result.violations] == [
        ("rm_tasks", "projections_match")
    ]
    assert str(UUID(bytes=task_id)) in result.violations[0].detail  # named by its text
    assert "1 live rows differ" in result.violations[0].detail
    assert "rebuilt in a scratch store" in result.checked


def test_a_deleted_and_an_inserted_live_row_are_found(projected):
    log, store = projected
    # Every demo task finished, and a finished task has no queue row: queue one more.
    runtime = runtime_on(log, SchedulerConfig(), VirtualClock())
    waiting = runtime.execute(cmd.SubmitTask(description="waits in the queue")).task_id
    task_id, key = str(waiting), waiting.bytes
    caught_up = runner_on(log)
    caught_up.run_until_caught_up()
    caught_up.close()
    assert store.query("SELECT COUNT(*) FROM rm_queue WHERE task_id = ?", (key,)) == [(1,)]
    _tamper(store, "DELETE FROM rm_queue WHERE task_id = ?", (key,))
    _tamper(
        store,
        "INSERT INTO rm_tel_counters (name, label, value) VALUES ('forged', '', 1)",
    )
    result = check_projections(log)
    found = {v.aggregate_id: v.detail for v in result.violations}
    assert set(found) == {"rm_queue", "rm_tel_counters"}
    assert (
        "0 live rows differ" in found["rm_queue"]
        and "1 rebuilt rows are not live" in found["rm_queue"]
    )
    assert task_id in found["rm_queue"]
    assert "1 live rows differ" in found["rm_tel_counters"] and "forged" in found["rm_tel_counters"]


def test_a_changed_counter_is_found(projected):
    log, store = projected
    _tamper(store, "UPDATE rm_tel_counters SET value = value + 1 WHERE name = 'events'")
    result = check_projections(log)
    assert [v.aggregate_id for v in result.violations] == ["rm_tel_counters"]


def test_live_read_models_behind_the_log_are_compared_at_their_position(store_url):
    run_demo(store_url, tasks=200, seed=4)
    log = EventLog(store_url)
    runner = runner_on(log)
    runner.rebuild(stop=500)  # the live models stop at 500 of the log's events
    assert runner.position() == 500 < log.head()
    result = check_projections(log)
    assert result.violations == [] and "compared by digest" in result.checked
    runner.close()
    log.close()


def test_a_log_without_live_read_models_is_skipped_with_a_reason(store_url):
    log = EventLog(store_url)
    runtime = runtime_on(log, SchedulerConfig(), VirtualClock())
    runtime.execute_batch([cmd.SubmitTask(description="x")])
    assert log.head() > 0
    result = check_projections(log)
    assert result.violations == [] and "skipped" in result.checked
    log.close()


def test_the_audit_finds_the_same_in_worker_processes_and_in_process(projected):
    log, store = projected
    _tamper(store, "UPDATE rm_agents SET status = ?", (STATUSES.code["busy"],))
    parallel, serial = audit(log, parallel=True), audit(log, parallel=False)
    assert parallel.violations == serial.violations
    assert [v.aggregate_id for v in parallel.violations] == ["rm_agents"]
    assert parallel.events == serial.events == log.head()


def test_every_projection_is_in_exactly_one_worker_group():
    names = [name for group in worker_groups() for name in group]
    assert sorted(names) == sorted(p.name for p in all_projections())


def test_released_rows_count_in_the_digest_as_if_kept():
    kept, released = DigestRows([RM_TASKS]), DigestRows([RM_TASKS])
    rows = [
        [(b"task-%d" % i) if c == "task_id" else i for c in RM_TASKS.column_names] for i in range(5)
    ]
    for row in rows:
        kept.put(RM_TASKS, list(row))
        released.put(RM_TASKS, list(row))
    released.release([b"task-1", b"task-3", b"task-9"])
    assert kept.digests() == released.digests()
    assert released.get(RM_TASKS, (b"task-1",)) is None
    assert kept.digests()["rm_tasks"][1] == 5


def test_row_digests_depend_on_every_value_and_its_type():
    assert row_digest(("a", 1, None)) != row_digest(("a", 1.0, None))
    assert row_digest(("a", 1, None)) != row_digest(("a", None, 1))
    assert row_digest(("a", 1, None)) == row_digest(("a", 1, None))


def test_the_replay_pass_feeds_consumers_every_event_once_in_order(projected):
    from tierlog.adapters.audit.replay import replay_check

    log, _store = projected
    seen: list[int] = []
    result = replay_check(
        log, batch=100, consumers=[lambda chunk: seen.extend(p for p, _ in chunk)]
    )
    assert result.clean
    assert seen == list(range(1, log.head() + 1))
    assert [p for p, _ in log.read(0, 50)] == seen[:50]


def test_a_dropped_live_table_is_a_violation_not_an_unreadable_store(projected):
    log, store = projected
    with store.transaction() as db:
        db.execute("DROP TABLE rm_queue")
    result = check_projections(log)
    assert [(v.aggregate_id, v.detail) for v in result.violations] == [
        ("rm_queue", "the live table is missing")
    ]


def test_read_models_beyond_the_logs_head_are_a_violation(tmp_path):
    import shutil

    big, small = tmp_path / "big.db", tmp_path / "small.db"
    run_demo(f"sqlite:///{big}", tasks=120, seed=6)
    run_demo(f"sqlite:///{small}", tasks=20, seed=6)
    shutil.copy(tmp_path / "big.read.db", tmp_path / "small.read.db")  # another log's models
    log = EventLog(f"sqlite:///{small}")
    report = audit(log, parallel=False)
    assert not report.clean
    assert {v.rule for v in report.violations} == {"projections_match"}
    assert all("beyond the log's head" in v.detail for v in report.violations)
    log.close()


def test_a_difference_whose_rows_cannot_be_named_is_still_a_violation(projected, monkeypatch):
    """When the exact comparison cannot catch the live models (they keep moving), the
    digest difference is reported rather than let go."""
    import tierlog.adapters.audit.projections as check

    log, store = projected
    _tamper(store, "UPDATE rm_tel_counters SET value = value + 1 WHERE name = 'events'")
    monkeypatch.setattr(check, "_ATTEMPTS", 0)  # as if the live models never held still
    result = check.check_projections(log)
    assert [(v.aggregate_id, v.rule) for v in result.violations] == [
        ("rm_tel_counters", "projections_match")
    ]
    assert "could not be named" in result.violations[0].detail
