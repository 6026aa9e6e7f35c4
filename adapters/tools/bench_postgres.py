"""``tierlog bench --postgres DSN``: submit→assigned on PostgreSQL beside raw psycopg.

The same workload as the SQLite figure (``bench_submit_to_assigned``): a fleet of
idle agents, tasks submitted in group commits of ``batch``, each commit's pass
assigning them. Its baseline, measured in the same run on the same server, is psycopg's
``executemany`` writing as many rows per task (400-byte payloads, sequential ids) into
a table of the log's own shape (``LIKE`` its events table: the same columns, key and
indexes, without tierlog's triggers and chain), one transaction per batch. Every run
works in schemas of its own, dropped afterwards, whatever happens.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse
from uuid import UUID, uuid4

import psycopg

from tierlog.adapters.settings import Settings
from tierlog.adapters.store.event_log import postgres_connect_args, store_env
from tierlog.adapters.tools.bench_fleet import fleet_on, submit_figures, time_submissions
from tierlog.domain.errors import ValidationError

ROWS_PER_TASK = 5
"""The baseline's rows per task: what submit→assigned appends (submitted, classified,
routed, assigned, agent reserved)."""


def with_schema(dsn: str, schema: str) -> str:
    """``dsn`` with its ``schema`` query parameter set to ``schema``."""
    parsed = urlparse(dsn)
    if parsed.scheme not in ("postgresql", "postgres"):
        raise ValidationError(
            "--postgres takes a postgresql:// DSN (bench makes its own schemas in it)",
            field="postgres",
        )
    query = [(k, v) for k, v in parse_qsl(parsed.query) if k != "schema"]
    return urlunparse(parsed._replace(query=urlencode([*query, ("schema", schema)])))


def _connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(**postgres_connect_args(store_env(dsn, create=False)))


@contextmanager
def scratch_schema(dsn: str, prefix: str) -> Iterator[str]:
    """A new, empty schema on the server of ``dsn``, dropped (with all it holds) after."""
    schema = f"{prefix}_{uuid4().hex[:12]}"
    with _connect(dsn) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        with _connect(dsn) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def raw_psycopg_rate(dsn: str, like: str, rows: int, batch_rows: int) -> float:
    """Rows/s for psycopg ``executemany`` + commit per ``batch_rows``, into a fresh table
    shaped like the table ``like`` (``"schema"."table"``), in a scratch schema."""
    payload = b"x" * 400
    data = [(UUID(int=p + 1), 1, "t", payload) for p in range(rows)]
    with scratch_schema(dsn, "tierlog_bench_raw") as schema, _connect(dsn) as conn:
        conn.execute(f'CREATE TABLE "{schema}".raw_events (LIKE {like} INCLUDING ALL)')
        conn.commit()
        insert = (
            f'INSERT INTO "{schema}".raw_events '
            "(originator_id, originator_version, topic, state) VALUES (%s, %s, %s, %s)"
        )
        started = time.perf_counter()
        with conn.cursor() as cursor:
            for i in range(0, rows, batch_rows):
                cursor.executemany(insert, data[i : i + batch_rows])
                conn.commit()
        return rows / (time.perf_counter() - started)


def bench_submit_to_assigned_postgres(
    dsn: str, tasks: int, batch: int, repeats: int
) -> dict[str, Any]:
    """Tasks/s from submission to assignment on PostgreSQL at ``dsn``, beside the raw
    psycopg baseline in the same run; ``ratio_median`` is the median of the runs'
    ratios."""
    rates: list[float] = []
    raw: list[float] = []
    events_per_task: list[float] = []
    for _ in range(repeats):
        with scratch_schema(dsn, "tierlog_bench") as schema:
            runtime = fleet_on(Settings(store=with_schema(dsn, schema)), agents=tasks)
            try:
                elapsed, appended = time_submissions(runtime, tasks, batch)
                events_table = f'"{schema}"."{runtime.log.recorder.events_table_name}"'
            finally:
                runtime.log.close()
            rates.append(tasks / elapsed)
            events_per_task.append(appended / tasks)
            rows_per_s = raw_psycopg_rate(dsn, events_table, appended, batch * ROWS_PER_TASK)
            raw.append(rows_per_s / (appended / tasks))
    return submit_figures((tasks, batch, repeats), rates, raw, events_per_task, "psycopg")
