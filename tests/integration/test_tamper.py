"""Tamper evidence on real stores: every edit, deletion, insertion or swap of stored
events is found at the right position, even with the append-only triggers dropped."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import psycopg
import pytest

from tierlog.adapters.audit.chain import verify_chain
from tierlog.adapters.audit.replay import replay_check
from tierlog.adapters.store.event_log import EventLog
from tierlog.adapters.tools.demo import run_demo


class RawStore:
    """Plain SQL on the log's tables, as someone with write access could run it."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        if log.sqlite_path is not None:
            self.conn: object = sqlite3.connect(log.sqlite_path, isolation_level=None)
            self.table, self.key, self.ph = "stored_events", "rowid", "?"
        else:
            env = log.env
            self.conn = psycopg.connect(
                dbname=env["POSTGRES_DBNAME"],
                host=env["POSTGRES_HOST"],
                user=env["POSTGRES_USER"],
                autocommit=True,
            )
            schema = env["POSTGRES_SCHEMA"]
            self.table, self.key, self.ph = f'"{schema}".tierlog_events', "notification_id", "%s"

    def run(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        sql = sql.format(t=self.table, k=self.key).replace("?", self.ph)
        cursor = self.conn.execute(sql, params)  # type: ignore[attr-defined]
        try:
            return list(cursor.fetchall())
        except (sqlite3.ProgrammingError, psycopg.ProgrammingError):
            return []

    def drop_triggers(self) -> None:
        if self.log.sqlite_path is not None:
            for name in ("stored_events_no_update", "stored_events_no_delete"):
                self.run(f"DROP TRIGGER {name}")
        else:
            for kind in ("update_delete", "truncate"):
                self.run(f"DROP TRIGGER tierlog_events_no_{kind} ON {{t}}")

    def row(self, position: int) -> tuple[object, ...]:
        return self.run(
            "SELECT originator_id, originator_version, topic, state FROM {t} WHERE {k} = ?",
            (position,),
        )[0]


def _findings(log: EventLog) -> list[tuple[int, str]]:
    """Every finding of the chain check, in log order."""
    found = [(v.position, v.rule) for v in verify_chain(log, batch=97)]
    # The audit's single pass names the same findings of the chain, in the same order.
    replayed = [(v.position, v.rule) for v in replay_check(log, batch=89).violations]
    assert [v for v in replayed if v[1].startswith(("chain_", "record_"))] == found
    return found


@pytest.fixture
def tampered(new_store) -> Callable[[], tuple[EventLog, RawStore]]:
    def make() -> tuple[EventLog, RawStore]:
        url = new_store()
        run_demo(url, tasks=60, seed=3)
        log = EventLog(url)
        raw = RawStore(log)
        raw.drop_triggers()
        return log, raw

    return make


def test_a_clean_log_passes_and_the_demo_log_passes(tampered):
    log, _ = tampered()
    assert log.head() > 300
    assert _findings(log) == []


def test_one_changed_byte_of_one_payload_is_found(tampered):
    log, raw = tampered()
    position = log.head() // 2
    state = bytes(raw.row(position)[3])  # type: ignore[arg-type]
    flipped = state.replace(b'"', b"'", 1)
    raw.run("UPDATE {t} SET state = ? WHERE {k} = ?", (flipped, position))
    assert _findings(log) == [(position, "record_changed")]


def test_a_deleted_row_is_found(tampered):
    log, raw = tampered()
    position = log.head() // 3
    raw.run("DELETE FROM {t} WHERE {k} = ?", (position,))
    assert _findings(log) == [(position, "record_missing")]


def test_deleted_rows_at_the_end_of_the_log_are_found(tampered):
    log, raw = tampered()
    head = log.head()
    raw.run("DELETE FROM {t} WHERE {k} >= ?", (head - 2,))
    assert log.head() == head - 3
    found = _findings(log)
    assert found[0] == (head - 2, "record_missing")
    # One finding per chain row the deleted positions were in: every one is named.
    assert {rule for _, rule in found} == {"record_missing"}
    assert found[-1][0] <= head and len(found) <= 3


def test_a_forged_row_is_found(tampered):
    log, raw = tampered()
    head = log.head()
    oid, _, topic, state = raw.row(head)
    raw.run(
        "INSERT INTO {t} (originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?)",
        (oid, 999_999, topic, state),
    )
    assert _findings(log) == [(head + 1, "record_inserted")]


def test_two_swapped_rows_are_found(tampered):
    log, raw = tampered()
    a, b = log.head() // 4, log.head() // 2
    row_a, row_b = raw.row(a), raw.row(b)
    # Swap payloads and topics (ids and versions are unique keys, so move them via a
    # placeholder version first).
    raw.run("UPDATE {t} SET topic = ?, state = ? WHERE {k} = ?", (row_b[2], row_b[3], a))
    raw.run("UPDATE {t} SET topic = ?, state = ? WHERE {k} = ?", (row_a[2], row_a[3], b))
    # Both, not just the first (the check no longer stops at its first finding).
    assert _findings(log) == [(a, "record_changed"), (b, "record_changed")]


def test_an_edited_chain_row_is_found(tampered):
    log, raw = tampered()
    chain = raw.table.replace("tierlog_events", "tierlog_events_chain").replace(
        "stored_events", "stored_events_chain"
    )
    if log.sqlite_path is not None:
        raw.run("DROP TRIGGER stored_events_chain_no_update")
    else:
        raw.run(f"DROP TRIGGER tierlog_events_chain_no_update_delete ON {chain}")
    first = raw.run(f"SELECT first_position FROM {chain} ORDER BY first_position LIMIT 1 OFFSET 5")
    raw.run(
        f"UPDATE {chain} SET chain_hash = ? WHERE first_position = ?", (b"\x01" * 32, first[0][0])
    )
    # One finding: the rows after it link to it as it was, and their records still match.
    assert _findings(log) == [(first[0][0], "chain_link")]
