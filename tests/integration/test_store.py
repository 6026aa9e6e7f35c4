"""The log on real stores: append-only, optimistic concurrency, codec round trips."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from uuid import uuid4

import psycopg
import pytest
from freezegun import freeze_time

from tierlog.adapters.store.event_log import EventLog
from tierlog.domain.errors import ConcurrencyConflictError, ValidationError
from tierlog.domain.events import TaskDeadLettered


def _event(task_id=None, version=1, when=None):
    return TaskDeadLettered(
        originator_id=task_id or uuid4(),
        originator_version=version,
        timestamp=when or datetime(2026, 1, 1, tzinfo=UTC),
        reason="ttl_expired",
    )


def _raw_execute(log: EventLog, statement: str) -> None:
    if log.sqlite_path is not None:
        with sqlite3.connect(log.sqlite_path) as conn:
            conn.execute(statement.format(table="stored_events"))
        return
    env = log.env
    table = f'"{env["POSTGRES_SCHEMA"]}".tierlog_events'
    with psycopg.connect(
        dbname=env["POSTGRES_DBNAME"], host=env["POSTGRES_HOST"], user=env["POSTGRES_USER"]
    ) as conn:
        conn.execute(statement.format(table=table))


def test_append_assigns_consecutive_positions_and_reads_back(store_url):
    log = EventLog(store_url)
    task = uuid4()
    events = [_event(task, v) for v in (1, 2, 3)]
    assert log.append(events) == [1, 2, 3]
    assert log.head() == 3
    assert [e for _, e in log.read(0, 10)] == events
    assert [p for p, _ in log.read(1, 10)] == [2, 3]
    assert log.events_of(task) == events
    log.close()


def test_same_aggregate_version_twice_is_a_conflict_and_appends_nothing(store_url):
    log = EventLog(store_url)
    task = uuid4()
    log.append([_event(task, 1)])
    with pytest.raises(ConcurrencyConflictError):
        log.append([_event(uuid4(), 1), _event(task, 1)])
    assert log.head() == 1
    log.close()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE {table} SET topic = 'forged'",
        "DELETE FROM {table}",
        "DELETE FROM {table} WHERE originator_version = 1",
    ],
)
def test_update_and_delete_of_stored_events_fail(store_url, statement):
    log = EventLog(store_url)
    log.append([_event()])
    with pytest.raises((sqlite3.DatabaseError, psycopg.Error), match="append-only"):
        _raw_execute(log, statement)
    assert log.head() == 1
    assert len(log.read(0, 10)) == 1
    log.close()


def test_truncate_fails_on_postgres(pg_url):
    log = EventLog(pg_url)
    log.append([_event()])
    with pytest.raises(psycopg.Error, match="append-only"):
        _raw_execute(log, "TRUNCATE {table}")
    assert log.head() == 1
    log.close()


def test_freezegun_time_is_stored_and_read_back(store_url):
    log = EventLog(store_url)
    with freeze_time("2026-03-04T05:06:07+00:00"):
        event = _event(when=datetime.now(UTC))
        log.append([event])
    stored = log.read(0, 1)[0][1]
    assert stored.timestamp == datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert type(stored.timestamp) is datetime
    log.close()


def test_a_second_process_sees_the_same_log(store_url):
    writer, reader = EventLog(store_url), EventLog(store_url)
    writer.append([_event() for _ in range(5)])
    assert reader.head() == 5
    assert len(list(reader.iter_events(0, batch=2))) == 5
    writer.close()
    reader.close()


@pytest.mark.parametrize("url", ["mysql://x", "sqlite://", "nonsense"])
def test_unknown_store_url_is_a_clear_error(url):
    with pytest.raises(ValidationError, match="store"):
        EventLog(url)


def test_a_large_mixed_append_keeps_its_order_its_bytes_and_its_chain(store_url):
    """Many aggregates interleaved, payloads with every byte a JSON string escapes, in
    one append: each position holds the event appended there, and the chain row built
    from the positions the store gave back verifies at the head (issue #17: the
    PostgreSQL insert sends one binary array per column)."""
    from tierlog.adapters.store.integrity import check_chain_at_head

    log = EventLog(store_url)
    tasks = [uuid4() for _ in range(7)]
    log.append([_event(t, 1) for t in tasks])
    reasons = ['quote " backslash \\ nul-ish \u0001', "tab\tnewline\n", "é ünïcode ✓", ""]
    events = [
        TaskDeadLettered(
            originator_id=tasks[i % 7],
            originator_version=2 + i // 7,
            timestamp=datetime(2026, 1, 1, tzinfo=UTC),
            reason=reasons[i % len(reasons)] * (i % 5),
        )
        for i in range(700)
    ]
    positions = log.append(events)
    assert positions == list(range(8, 708))
    assert [e for _, e in log.read(7, 1000)] == events
    check_chain_at_head(log)
    with pytest.raises(ConcurrencyConflictError):
        log.append([_event(uuid4(), 1), _event(tasks[3], 2)])
    assert log.head() == 707
    log.close()
