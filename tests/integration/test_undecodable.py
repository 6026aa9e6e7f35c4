"""Nothing undecodable is appended; a log that holds such an event is named, not read.

On real stores: the append refuses a batch holding an event that would not decode back
(nothing of it is written), a command whose events the store would refuse fails alone
in its group commit, and a bad row put into the log behind tierlog's back (sqlite3 or
psycopg directly) stops ``serve`` and is reported by ``audit``, each naming its
position and type in one line.
"""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import msgspec
import psycopg
import pytest
from event_factories import completed_with, plain_submission
from wiring import runtime_on

from tierlog.adapters import bootstrap
from tierlog.adapters.audit.run import audit
from tierlog.adapters.settings import Settings
from tierlog.adapters.store.event_log import EventLog
from tierlog.adapters.store.hash_chain import chain_row
from tierlog.domain import commands as cmd
from tierlog.domain import events as ev
from tierlog.domain.errors import InternalError, UndecodableEventError, ValidationError
from tierlog.domain.limits import CommandLimits
from tierlog.domain.unit_of_work import UnitOfWork

NOW = datetime(2026, 1, 2, tzinfo=UTC)


def _completed(result: object) -> ev.TaskCompleted:
    return completed_with(result, NOW)


def test_a_batch_with_an_event_that_would_not_decode_appends_nothing(store_url):
    log = EventLog(store_url)
    try:
        head = log.head()
        good, bad = _completed({"fine": 1}), _completed({"x": math.nan})
        with pytest.raises(UndecodableEventError, match="TaskCompleted") as info:
            log.append([good, bad])
        assert info.value.code == "undecodable_event"
        assert log.head() == head
        assert log.append([good]) == [head + 1]
    finally:
        log.close()


def test_a_command_carrying_nan_past_its_type_is_refused_alone(store_url):
    runtime = runtime_on(store_url)
    try:
        task = runtime.execute(cmd.SubmitTask(description="held", complexity_tier="trivial"))
        runtime.execute(cmd.RegisterAgent(agent_id="a1"))
        generation = runtime.read(lambda s: s.tasks[task.task_id].generation)
        head = runtime.log.head()
        # A command built without validation (as a bug would): its result is NaN. The
        # service's limits check catches it before anything is decided.
        poisoned = cmd.CompleteTask.model_construct(
            agent_id="a1", task_id=task.task_id, generation=generation, result=math.nan
        )
        results = runtime.execute_batch(
            [cmd.SubmitTask(description="before"), poisoned, cmd.SubmitTask(description="after")]
        )
        assert isinstance(results[1], ValidationError) and results[1].field == "result"
        assert [r.created for r in (results[0], results[2])] == [True, True]
        assert runtime.read(lambda s: s.tasks[task.task_id].state) == "assigned"
        appended = [e for _, e in runtime.log.read(head)]
        assert not any(isinstance(e, ev.TaskCompleted) for e in appended)
        assert sum(isinstance(e, ev.TaskSubmitted) for e in appended) == 2
    finally:
        runtime.stop()
        runtime.log.close()


def test_a_command_whose_events_the_store_refuses_fails_alone(store_url):
    runtime = runtime_on(store_url)
    try:

        def emits_nan(command: object, uow: UnitOfWork, now: datetime) -> None:
            submitted = plain_submission(uuid4(), 1, now)
            uow.emit(msgspec.structs.replace(submitted, metadata={"score": math.inf}))

        runtime.service._handlers[cmd.RetryTask] = emits_nan
        head = runtime.log.head()
        results = runtime.execute_batch(
            [cmd.SubmitTask(description="a"), cmd.RetryTask(task_id=uuid4())]
        )
        assert results[0].created
        assert isinstance(results[1], UndecodableEventError)
        assert "refused to append a TaskSubmitted" in results[1].message
        appended = [e for _, e in runtime.log.read(head)]
        assert [e.description for e in appended if isinstance(e, ev.TaskSubmitted)] == ["a"]
    finally:
        runtime.stop()
        runtime.log.close()


def test_an_unexpected_fault_fails_its_command_alone_and_is_logged(store_url, caplog):
    runtime = runtime_on(store_url)
    try:

        def broken(command: object, uow: object, now: object) -> None:
            raise RecursionError("maximum recursion depth exceeded")

        runtime.service._handlers[cmd.RetryTask] = broken
        results = runtime.execute_batch(
            [cmd.SubmitTask(description="a"), cmd.RetryTask(task_id=uuid4())]
        )
        assert results[0].created
        assert isinstance(results[1], InternalError)
        assert "retry_task failed inside tierlog (RecursionError)" in results[1].message
        assert "Traceback" in caplog.text and "RecursionError" in caplog.text
    finally:
        runtime.stop()
        runtime.log.close()


def test_configured_limits_reach_the_runtime(store_url):
    runtime = runtime_on(store_url, max_metadata_bytes=100)
    try:
        assert runtime.service.limits == CommandLimits(max_metadata_bytes=100)
        with pytest.raises(ValidationError, match=r"metadata: .* \(max_metadata_bytes\)"):
            runtime.execute(cmd.SubmitTask(description="d", metadata={"k": "v" * 200}))
    finally:
        runtime.stop()
        runtime.log.close()


# --- a log that holds an undecodable event -------------------------------------------------


def _insert_bad_row(log: EventLog) -> int:
    """A TaskCompleted whose generation is null, written past tierlog with a hash-chain
    row that links it (so only its payload is wrong): its position."""
    oid = uuid4()
    state = (
        b'{"originator_id":"%s","originator_version":1,"timestamp":"2026-01-02T00:00:00Z",'
        b'"agent_id":"a1","generation":null,"result":null}' % str(oid).encode()
    )
    table = log.recorder.events_table_name
    chain = table + "_chain"
    if log.is_postgres:
        schema = log.env["POSTGRES_SCHEMA"]
        with psycopg.connect(log.url.partition("?")[0], autocommit=True) as conn:
            row = conn.execute(
                f'INSERT INTO "{schema}"."{table}" (originator_id, originator_version, topic, '
                "state) VALUES (%s, 1, 'TaskCompleted', %s) RETURNING notification_id",
                (oid, state),
            ).fetchone()
            assert row is not None
            position = int(row[0])
            previous = conn.execute(
                f'SELECT chain_hash FROM "{schema}"."{chain}" ORDER BY last_position DESC LIMIT 1'
            ).fetchone()
            linked = chain_row(
                bytes(previous[0]), [position], [(oid.bytes, 1, "TaskCompleted", state)]
            )
            conn.execute(
                f'INSERT INTO "{schema}"."{chain}" VALUES (%s, %s, %s, %s)',
                (position, position, linked.record_hashes, linked.chain_hash),
            )
            return position
    import sqlite3

    with sqlite3.connect(log.env["SQLITE_DBNAME"]) as conn:
        cursor = conn.execute(
            f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
            "VALUES (?, 1, 'TaskCompleted', ?)",
            (oid.hex, state),
        )
        position = int(cursor.lastrowid or 0)
        previous = conn.execute(
            f"SELECT chain_hash FROM {chain} ORDER BY last_position DESC LIMIT 1"
        ).fetchone()
        linked = chain_row(previous[0], [position], [(oid.bytes, 1, "TaskCompleted", state)])
        conn.execute(
            f"INSERT INTO {chain} VALUES (?, ?, ?, ?)",
            (position, position, linked.record_hashes, linked.chain_hash),
        )
        return position


def _tierlog(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).with_name("tierlog"))
    return subprocess.run(
        [exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_serve_refuses_and_audit_reports_an_undecodable_event(store_url, tmp_path):
    runtime = runtime_on(store_url)
    runtime.execute(cmd.SubmitTask(description="before the bad row"))
    runtime.stop()
    position = _insert_bad_row(runtime.log)
    runtime.log.close()

    found = bootstrap.undecodable_event(bootstrap.open_log(Settings(store=store_url)))
    assert found is not None and f"position {position}: TaskCompleted" in found.message

    served = _tierlog("serve", "--port", "0", "--store", store_url, cwd=tmp_path)
    assert served.returncode == 2, served.stdout + served.stderr
    errors = [line for line in served.stderr.splitlines() if line.startswith("tierlog:")]
    assert len(errors) == 1, served.stderr
    assert f"position {position}: TaskCompleted does not decode" in errors[0]
    assert "Traceback" not in served.stderr

    audited = _tierlog("audit", "--store", store_url, cwd=tmp_path)
    assert audited.returncode == 1, audited.stdout + audited.stderr
    lines = [line for line in audited.stdout.splitlines() if "event_decodes" in line]
    assert len(lines) == 1
    assert f"position {position} " in lines[0] and "TaskCompleted does not decode" in lines[0]

    report = audit(EventLog(store_url), parallel=False)
    assert any(
        v.rule == "event_decodes" and v.position == position and "TaskCompleted" in v.detail
        for v in report.violations
    )
