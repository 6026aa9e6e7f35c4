"""Read models on real stores hold live rows only, and read models an older fold wrote
are folded again from position 0 when the runner starts (``rm_folds``)."""

from __future__ import annotations

from wiring import runner_on, runtime_on

from tierlog.adapters.audit.projections import check_projections
from tierlog.adapters.readside.read_store import IDENTITY_KEY, ReadStore
from tierlog.adapters.readside.runner import ProjectionRunner
from tierlog.adapters.store.event_log import EventLog
from tierlog.adapters.store.lineage import fingerprint
from tierlog.adapters.tools.demo import run_demo
from tierlog.domain import commands as cmd
from tierlog.domain.clock import VirtualClock
from tierlog.domain.config import SchedulerConfig
from tierlog.projections.base import STATES, STATUSES, fold_version, id_text
from tierlog.projections.registry import all_projections

_LIVE = ("queued", "assigned", "dead_lettered")


def _dump(store: ReadStore) -> dict[str, list[tuple[object, ...]]]:
    tables = [t.name for p in all_projections() for t in p.tables]
    return {t: sorted(map(tuple, store.query(f"SELECT * FROM {t}")), key=repr) for t in tables}


def _ids(store: ReadStore, sql: str) -> set[str]:
    return {_text(row[0]) for row in store.query(sql)}


def _text(value: object) -> str:
    """A key as the answers show it (a task id's bytes as its text)."""
    return id_text(value) if isinstance(value, bytes) else str(value)


def _positions(store: ReadStore) -> dict[str, int]:
    return {str(n): int(p) for n, p in store.query("SELECT name, position FROM rm_positions")}


def test_after_many_tasks_complete_the_queue_holds_only_the_live_rows(new_store):
    url = new_store()
    runtime = runtime_on(url, SchedulerConfig(), VirtualClock())
    runtime.execute(cmd.RegisterAgent(agent_id="a1"))
    runtime.execute(cmd.RegisterAgent(agent_id="leaving"))
    runtime.execute(cmd.DeregisterAgent(agent_id="leaving"))
    for i in range(40):
        task_id = runtime.execute(cmd.SubmitTask(description=f"fix typo {i}")).task_id
        task = runtime.state.tasks[task_id]
        assert task.state == "assigned"
        runtime.execute(
            cmd.CompleteTask(agent_id="a1", task_id=task_id, generation=task.generation)
        )
    cancelled = runtime.execute(cmd.SubmitTask(description="implement the feature")).task_id
    runtime.execute(cmd.CancelTask(task_id=cancelled))
    waiting = runtime.execute(cmd.SubmitTask(description="implement the feature")).task_id
    runner = runner_on(runtime.log)
    runner.run_until_caught_up()
    store = runner.store
    assert _ids(store, "SELECT task_id FROM rm_queue") == {str(waiting)}
    assert store.query("SELECT COUNT(*) FROM rm_tasks")[0][0] == 42  # the record keeps all
    assert _ids(store, "SELECT agent_id FROM rm_agents") == {"a1"}
    assert check_projections(runtime.log).violations == []
    runner.close()
    runtime.log.close()


def test_the_demos_queue_and_agents_hold_live_rows_and_the_audit_agrees(new_store):
    url = new_store()
    run_demo(url, tasks=300, seed=11)
    log = EventLog(url)
    runner = runner_on(log)
    store = runner.store
    states = {
        _text(t): STATES.names[s] for t, s in store.query("SELECT task_id, state FROM rm_tasks")
    }
    live = {task_id for task_id, state in states.items() if state in _LIVE}
    assert len(live) < len(states)
    assert _ids(store, "SELECT task_id FROM rm_queue") == live
    gone = STATUSES.code["deregistered"]
    assert store.query("SELECT COUNT(*) FROM rm_agents WHERE status = ?", (gone,))[0][0] == 0
    result = check_projections(log)
    assert result.violations == [] and "compared by digest" in result.checked
    runner.close()
    log.close()


def _as_an_older_fold_left_them(store: ReadStore) -> None:
    """Put back what version 1 of the queue, agents and telemetry folds kept (a
    completed task's row, a deregistered agent, timers counted under no reason), and
    forget their versions, as read models written before ``rm_folds`` existed."""
    with store.transaction() as db:
        db.execute(
            "INSERT INTO rm_queue SELECT task_id, 0, priority, priority_rank, submit_position,"
            " tier, effective_tier, NULL, generation, submitted_at, complete_by, '[]',"
            " description, NULL, NULL, NULL, position FROM rm_tasks WHERE state = ?",
            (STATES.code["completed"],),
        )
        db.execute(
            "INSERT INTO rm_agents VALUES ('gone', ?, '[]', NULL, NULL, NULL, 0, 0, 1)",
            (STATUSES.code["deregistered"],),
        )
        db.execute("INSERT INTO rm_tel_counters VALUES ('timers_started', '', 99)")
        db.execute("DELETE FROM rm_folds WHERE name IN ('queue', 'agents', 'telemetry')")


def test_read_models_an_older_fold_wrote_are_folded_again_at_start(new_store):
    url = new_store()
    run_demo(url, tasks=200, seed=4)
    log = EventLog(url)
    runner = runner_on(log)
    expected = _dump(runner.store)
    _as_an_older_fold_left_them(runner.store)
    runner.close()
    head = log.head()
    again = runner_on(log)  # starts: queue, agents and telemetry renewed, the others kept
    positions = _positions(again.store)
    assert positions["queue"] == positions["agents"] == positions["telemetry"] == 0
    assert positions["tasks"] == positions["endpoints"] == head
    versions = dict(again.store.query("SELECT name, version FROM rm_folds"))
    assert versions == {p.name: fold_version(p) for p in all_projections()}
    assert again.store.query("SELECT COUNT(*) FROM rm_queue")[0][0] == 0
    again.run_until_caught_up()
    assert _dump(again.store) == expected
    assert check_projections(log).violations == []
    again.close()
    third = runner_on(log)  # versions current: nothing renewed
    assert _positions(third.store)["queue"] == head
    third.close()
    log.close()


def test_renewing_the_slowest_read_model_keeps_the_logs_fingerprint_where_it_is_read(new_store):
    """The lineage check reads the fingerprint at the slowest read model past 0; when
    that is the one renewed, the fingerprint moves to the next slowest, else the next
    start would call the log replaced."""
    url = new_store()
    run_demo(url, tasks=200, seed=4)
    log = EventLog(url)
    full = runner_on(log)
    expected = _dump(full.store)
    upto = log.head() // 2
    full.rebuild(stop=upto)
    with full.store.transaction() as db:  # queue folded again from 0, stopped mid-way
        db.execute("DELETE FROM rm_queue")
        db.execute("UPDATE rm_positions SET position = 0 WHERE name = 'queue'")
    full.close()
    slow = runner_on(log, projection_batch=50)
    slow.run_once(stop=upto)
    slow.run_once(stop=upto)
    positions = _positions(slow.store)
    assert positions["queue"] == 100 < positions["tasks"] == upto
    assert positions[IDENTITY_KEY] == fingerprint(log.chain_hash_at(100))
    with slow.store.transaction() as db:
        db.execute("UPDATE rm_folds SET version = 1 WHERE name = 'queue'")
    slow.close()
    renewed = runner_on(log)
    positions = _positions(renewed.store)
    assert positions["queue"] == 0
    assert positions[IDENTITY_KEY] == fingerprint(log.chain_hash_at(upto))
    renewed.close()
    restarted = runner_on(log)  # the lineage check passes: no ReplacedLogError
    restarted.run_until_caught_up()
    assert _dump(restarted.store) == expected
    restarted.close()
    log.close()


def test_a_runner_renews_only_its_own_read_models(store_url):
    """The audit folds groups of read models into one scratch store: a group's runner
    leaves the versions and rows of the others alone."""
    run_demo(store_url, tasks=50, seed=2)
    log = EventLog(store_url)
    runner = runner_on(log)
    with runner.store.transaction() as db:
        db.execute("DELETE FROM rm_folds")
    queue_only = [p for p in all_projections() if p.name == "queue"]
    alone = ProjectionRunner(log, runner.store, queue_only)
    alone.start()
    versions = dict(runner.store.query("SELECT name, version FROM rm_folds"))
    assert versions == {"queue": fold_version(queue_only[0])}
    assert _positions(runner.store)["agents"] == log.head()
    alone.run_until_caught_up()
    runner.close()
    log.close()
