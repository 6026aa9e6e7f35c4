"""Gaps in the positions of a PostgreSQL log are not tampering.

A rolled-back insert draws ``notification_id`` values all the same, so positions skip
them; the audit of such a log (through the CLI, as a user runs it) must be clean, and a
record forged into such a gap must still be found.
"""

from __future__ import annotations

import itertools
import json
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from event_factories import plain_submission
from wiring import runtime_on

from tierlog.adapters.audit.chain import verify_chain
from tierlog.adapters.cli import main
from tierlog.adapters.store.event_log import EventLog
from tierlog.adapters.store.integrity import check_chain_at_head
from tierlog.domain import commands as cmd
from tierlog.domain.clock import VirtualClock
from tierlog.domain.errors import ConcurrencyConflictError

pytestmark = pytest.mark.postgres


def _table(log: EventLog) -> str:
    return f'"{log.env["POSTGRES_SCHEMA"]}".tierlog_events'


def _connect(log: EventLog) -> psycopg.Connection[tuple[object, ...]]:
    env = log.env
    return psycopg.connect(
        dbname=env["POSTGRES_DBNAME"], host=env["POSTGRES_HOST"], user=env["POSTGRES_USER"]
    )


def _submit(n: int) -> list[cmd.Command]:
    return [
        cmd.SubmitTask(description=f"fix typo {k}", complexity_tier="trivial") for k in range(n)
    ]


def _chain_gaps(log: EventLog) -> list[tuple[int, int]]:
    """(last of one chain row, first of the next) wherever positions were skipped."""
    rows = log.chain_rows(0, 10_000)
    return [(a[1], b[0]) for a, b in itertools.pairwise(rows) if b[0] != a[1] + 1]


def _audit(url: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    capsys.readouterr()
    code = main(["audit", "--json", "--store", url])
    return code, json.loads(capsys.readouterr().out)


def _burn(log: EventLog) -> None:
    """Skip positions the three ways PostgreSQL does: a bare ``nextval``, an insert
    rolled back, and a lost version race through the log (an append that conflicts on
    its last event)."""
    table = _table(log)
    with _connect(log) as conn:
        conn.execute(f"SELECT nextval(pg_get_serial_sequence('{table}', 'notification_id'))")
        conn.commit()
        conn.execute(
            f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
            "VALUES (%s, 1, 'TaskSubmitted', '{}')",
            (uuid.uuid4(),),
        )
        conn.rollback()
    now = datetime.now(UTC)
    first = plain_submission(uuid.uuid4(), 1, now)
    with pytest.raises(ConcurrencyConflictError):
        log.append([plain_submission(uuid.uuid4(), 1, now), first, first])


def test_burned_sequence_values_leave_gaps_that_audit_clean(pg_url, capsys):
    runtime = runtime_on(pg_url, clock=VirtualClock())
    log = runtime.log
    runtime.execute_batch(_submit(5))
    _burn(log)
    runtime.execute_batch(_submit(4))  # one append, right after the gap
    _burn(log)
    _burn(log)
    runtime.execute_batch(_submit(3))
    gaps = _chain_gaps(log)
    # Each burn skipped 1 + 1 + 3 values, and the appends after them are consecutive.
    assert [first - last - 1 for last, first in gaps] == [5, 10]
    assert list(verify_chain(log)) == []
    code, report = _audit(pg_url, capsys)
    assert (code, report["clean"], report["violations"]) == (0, True, [])
    log.close()


def test_serve_starts_on_a_log_whose_head_follows_a_gap(pg_url):
    runtime = runtime_on(pg_url, clock=VirtualClock())
    log = runtime.log
    _burn(log)  # before the first append: the chain starts after position 1
    runtime.execute_batch(_submit(2))
    check_chain_at_head(log)
    _burn(log)  # between the last two appends
    runtime.execute_batch(_submit(2))
    assert len(_chain_gaps(log)) >= 1
    check_chain_at_head(log)  # what `serve` checks before it writes anything
    log.close()


def test_a_record_forged_into_a_gap_is_found(pg_url, capsys):
    runtime = runtime_on(pg_url, clock=VirtualClock())
    log = runtime.log
    runtime.execute_batch(_submit(3))
    _burn(log)
    runtime.execute_batch(_submit(3))
    [(last, first)] = _chain_gaps(log)
    raw = log.iter_raw(last - 1, last)
    _, raw_id, version, topic, state = next(raw)[0]
    raw.close()
    with _connect(log) as conn:  # an explicit position: the sequence is not asked
        conn.execute(
            f"INSERT INTO {_table(log)} (notification_id, originator_id, originator_version, "
            "topic, state) VALUES (%s, %s, %s, %s, %s)",
            (last + 2, uuid.UUID(raw_id), version + 100, topic, state),
        )
    assert [(v.position, v.rule) for v in verify_chain(log)] == [(last + 2, "record_inserted")]
    code, report = _audit(pg_url, capsys)
    assert code == 1
    assert report["violations"][0] == {  # type: ignore[index]
        "position": last + 2,
        "aggregate_id": "log",
        "rule": "record_inserted",
        "detail": "a record no chain row covers",
    }
    assert first > last + 2
    log.close()
