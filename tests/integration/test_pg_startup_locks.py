"""Starting beside a busy node on PostgreSQL: a start whose tables all exist takes no
lock a running append or projection batch holds, and runners on one schema take turns."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from wiring import runner_on, runtime_on

from tierlog.adapters.readside.read_store import IDENTITY_KEY, ReadStore
from tierlog.adapters.readside.runner import ProjectionRunner
from tierlog.adapters.store import pg_locks
from tierlog.adapters.store.event_log import EventLog, store_env
from tierlog.adapters.store.lineage import fingerprint
from tierlog.domain import commands as cmd

pytestmark = pytest.mark.postgres


def _schema(url: str) -> str:
    return store_env(url, create=False)["POSTGRES_SCHEMA"]


def _start_everything(url: str, done: list[str]) -> None:
    """What a restarted node does before it serves: open the log (creating what is
    missing), open the read store, make the read models ready."""
    log = EventLog(url)
    try:
        runner = ProjectionRunner(log, ReadStore(log))
        runner.start()
        runner.store.close()
        done.append("started")
    finally:
        log.close()


def test_a_start_takes_no_lock_that_a_busy_node_holds(pg_url):
    runtime = runtime_on(pg_url)
    runtime.start_background()
    runtime.call(cmd.SubmitTask(description="fix typo"))
    runner = runner_on(runtime.log)
    runner.run_until_caught_up()
    schema = _schema(pg_url)
    # One transaction holding what a busy node's append and projection batch hold at
    # once: the events table EXCLUSIVE, the chain and read-model tables ROW EXCLUSIVE,
    # every rm_positions row FOR UPDATE, and the projections lock.
    busy = psycopg.connect(pg_url.split("?")[0])
    done: list[str] = []
    try:
        with busy.transaction():
            busy.execute(f'LOCK TABLE "{schema}".tierlog_events IN EXCLUSIVE MODE')
            busy.execute(f'LOCK TABLE "{schema}".tierlog_events_chain IN ROW EXCLUSIVE MODE')
            busy.execute(f'SELECT * FROM "{schema}".rm_positions FOR UPDATE')
            for table in ("rm_tasks", "rm_queue", "rm_agents"):
                busy.execute(f'LOCK TABLE "{schema}".{table} IN ROW EXCLUSIVE MODE')
            pg_locks.lock_for(busy, pg_locks.PROJECTIONS, schema)
            starter = threading.Thread(target=_start_everything, args=(pg_url, done))
            starter.start()
            starter.join(timeout=20)
            assert done == ["started"], "the start waited for a lock the busy node holds"
    finally:
        busy.close()
        runner.close()
        runtime.stop()
        runtime.log.close()


def test_every_create_statement_of_the_log_names_what_it_makes(pg_url):
    """The start skips the DDL when every object is there: so each statement must be
    known by what it makes (a new eventsourcing release that adds one fails here)."""
    log = EventLog(pg_url)
    try:
        made = log.recorder.creates()
        assert all(makes is not None for makes, _ in made), made
        assert made[0][0][0] == "type"  # the insert function takes an array of it
    finally:
        log.close()


def _waiting_for_an_advisory_lock(url: str) -> bool:
    with psycopg.connect(url.split("?")[0]) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone()
    return row is not None and row[0] > 0


def test_a_runner_whose_batch_another_folded_meanwhile_writes_nothing(pg_url):
    """Two runners on one schema: one reads a batch, waits for the projections lock
    while the other folds past it, then writes nothing, and the log's fingerprint
    stays where the read models stand (else the next start calls the log replaced)."""
    runtime = runtime_on(pg_url)
    runtime.start_background()
    runtime.call(cmd.SubmitTask(description="first"))
    first = runner_on(runtime.log)
    second = runner_on(EventLog(pg_url), projection_batch=1)  # reads one event at a time
    try:
        first.run_until_caught_up()
        runtime.call(cmd.SubmitTask(description="second"))
        runtime.call(cmd.SubmitTask(description="third"))  # another append: another chain row
        head = runtime.log.head()
        applied: list[int] = []
        with first.store.transaction():  # holds the projections lock, as a batch does
            waiter = threading.Thread(target=lambda: applied.append(second.run_once()))
            waiter.start()
            for _ in range(200):
                if _waiting_for_an_advisory_lock(pg_url):
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the second runner never waited for the lock")
            first.run_until_caught_up()  # folds on, in a savepoint of this transaction
        waiter.join(timeout=20)
        assert applied == [1]  # it read one event, found it folded, wrote nothing
        stored = dict(first.store.query("SELECT name, position FROM rm_positions"))
        assert {stored[p.name] for p in first.projections} == {head}
        assert stored[IDENTITY_KEY] == fingerprint(runtime.log.chain_hash_at(head))
        assert first.store.query("SELECT COUNT(*) FROM rm_tasks")[0][0] == 3
        second.run_until_caught_up()  # nothing left for it either
        assert dict(first.store.query("SELECT name, position FROM rm_positions")) == stored
        # Its node's reads that wait for a position see where the other runner got to.
        assert second.committed_position == head
    finally:
        for runner in (first, second):
            runner.close()
        second.log.close()
        runtime.stop()
        runtime.log.close()
