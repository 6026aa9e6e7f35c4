"""The hash chain's head is found by its key, not by scanning the chain table.

Each append reads the chain's last row; a query ordered by ``last_position`` (no index)
scanned and sorted the whole table, one row per commit ever made, so every append got
slower as the log grew (53 ms on a log of 5,614 chain rows).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from event_factories import plain_submission

from tierlog.adapters import bootstrap
from tierlog.adapters.settings import Settings
from tierlog.adapters.store.chain_reads import LAST_COVERED
from tierlog.adapters.store.event_log import EventLog


def _plan(log: EventLog, sql: str) -> str:
    if log.is_postgres:
        with log.recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(f"EXPLAIN {sql}")
            return "\n".join(str(next(iter(row.values()))) for row in curs.fetchall())
    with log.recorder.datastore.transaction(commit=False) as curs:
        curs.execute(f"EXPLAIN QUERY PLAN {sql}")
        return "\n".join(str(row[-1]) for row in curs.fetchall())


def _chain_table(log: EventLog) -> str:
    table = log.recorder.chain_table_name
    return f'"{log.env["POSTGRES_SCHEMA"]}"."{table}"' if log.is_postgres else table


def _uses_the_key(log: EventLog, plan: str) -> bool:
    if log.is_postgres:
        return "Index Scan Backward" in plan and "Sort" not in plan
    return "TEMP B-TREE" not in plan


def test_appends_and_readers_find_the_chain_head_by_its_key(store_url: str) -> None:
    log = bootstrap.open_log(Settings(store=store_url))
    try:
        for _ in range(30):  # one chain row per append
            log.append([plain_submission(uuid4(), 1, datetime.now(UTC))])
        recorder: Any = log.recorder
        head_sql = recorder._chain_head
        if not isinstance(head_sql, str):  # psycopg's composed SQL
            head_sql = head_sql.as_string(None)
        covered = f"SELECT {LAST_COVERED.format(table=_chain_table(log))}"
        for sql in (head_sql, covered):
            plan = _plan(log, sql)
            assert _uses_the_key(log, plan), f"{sql}\n{plan}"
        assert log.chain_head() == log.head() == 30
    finally:
        log.close()


def test_an_empty_chain_covers_nothing(store_url: str) -> None:
    log = bootstrap.open_log(Settings(store=store_url))
    try:
        assert log.chain_head() == 0
    finally:
        log.close()
