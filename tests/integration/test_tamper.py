"""Tamper evidence on real stores: every edit, deletion, insertion or swap of stored
events is found at the right position, even with the append-only triggers dropped."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tierlog.adapters.audit.chain import MAX_FINDINGS, verify_chain
from tierlog.adapters.audit.replay import replay_check
from tierlog.adapters.cli import main
from tierlog.adapters.store.event_log import EventLog
from tierlog.adapters.store.hash_chain import HASH_SIZE, link
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

    @property
    def chain(self) -> str:
        """The hash chain's table, as SQL."""
        return self.table.replace("tierlog_events", "tierlog_events_chain").replace(
            "stored_events", "stored_events_chain"
        )

    def drop_chain_triggers(self) -> None:
        if self.log.sqlite_path is not None:
            for name in ("stored_events_chain_no_update", "stored_events_chain_no_delete"):
                self.run(f"DROP TRIGGER {name}")
        else:
            self.run(f"DROP TRIGGER tierlog_events_chain_no_update_delete ON {self.chain}")

    def chain_rows(self) -> list[tuple[int, int]]:
        """Every chain row's (first, last), in order."""
        rows = self.run(f"SELECT first_position, last_position FROM {self.chain} ORDER BY 1")
        return [(int(a), int(b)) for a, b in rows]  # type: ignore[call-overload]

    def change(self, position: int) -> None:
        """One changed byte in the payload at ``position``."""
        state = bytes(self.row(position)[3])  # type: ignore[call-overload]
        self.run("UPDATE {t} SET state = ? WHERE {k} = ?", (state.replace(b'"', b"'", 1), position))

    def pad(self, position: int) -> None:
        """A space after the payload at ``position``: it still decodes, its hash differs."""
        state = bytes(self.row(position)[3])  # type: ignore[call-overload]
        self.run("UPDATE {t} SET state = ? WHERE {k} = ?", (state + b" ", position))

    def row(self, position: int) -> tuple[object, ...]:
        return self.run(
            "SELECT originator_id, originator_version, topic, state FROM {t} WHERE {k} = ?",
            (position,),
        )[0]


def _findings(log: EventLog) -> list[tuple[int, str]]:
    """Every finding of the chain check, in log order."""
    found = [(v.position, v.rule) for v in verify_chain(log, batch=97)]
    # The audit's single pass names the same findings of the chain, in the same order
    # (the first MAX_FINDINGS of them; the rest it counts).
    replayed = replay_check(log, batch=89)
    listed = [(v.position, v.rule) for v in replayed.violations]
    assert [v for v in listed if v[1].startswith(("chain_", "record_"))] == found[:MAX_FINDINGS]
    assert replayed.omitted == max(0, len(found) - MAX_FINDINGS)
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
    raw.change(position)
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
    raw.drop_chain_triggers()
    first = raw.chain_rows()[5][0]
    raw.run(
        f"UPDATE {raw.chain} SET chain_hash = ? WHERE first_position = ?", (b"\x01" * 32, first)
    )
    # One finding: the rows after it link to it as it was, and their records still match.
    assert _findings(log) == [(first, "chain_link")]


# --- every finding, not just the first ------------------------------------------------


def _audit_cli(log: EventLog, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main(["audit", "--json", "--store", log.url])
    out, err = capsys.readouterr()
    assert out, err
    report: dict[str, Any] = json.loads(out)
    return code, report


def _chain_findings(report: dict[str, Any]) -> list[tuple[int, str]]:
    return [
        (v["position"], v["rule"])
        for v in report["violations"]
        if v["rule"].startswith(("chain_", "record_"))
    ]


def test_a_deleted_row_and_a_later_change_are_both_reported(tampered, capsys):
    log, raw = tampered()
    deleted, changed = log.head() // 3, 2 * log.head() // 3
    raw.run("DELETE FROM {t} WHERE {k} = ?", (deleted,))
    raw.pad(changed)
    expected = [(deleted, "record_missing"), (changed, "record_changed")]
    assert _findings(log) == expected
    code, report = _audit_cli(log, capsys)
    assert code == 1 and not report["clean"]
    assert _chain_findings(report) == expected
    assert (report["violations"][0]["position"], report["violations"][0]["rule"]) == expected[0]


def test_an_edited_chain_row_is_one_finding_and_later_records_are_still_checked(tampered, capsys):
    log, raw = tampered()
    raw.drop_chain_triggers()
    rows = raw.chain_rows()
    edited = rows[len(rows) // 3][0]
    changed = rows[2 * len(rows) // 3][0]
    raw.run(f"UPDATE {raw.chain} SET chain_hash = ? WHERE first_position = ?", (b"\1" * 32, edited))
    raw.pad(changed)
    expected = [(edited, "chain_link"), (changed, "record_changed")]
    assert _findings(log) == expected
    code, report = _audit_cli(log, capsys)
    assert code == 1 and _chain_findings(report) == expected


def test_edited_record_hashes_of_a_chain_row_break_its_link_and_name_the_record(tampered):
    log, raw = tampered()
    raw.drop_chain_triggers()
    first = next(a for a, b in raw.chain_rows()[10:] if b > a)
    (hashes,) = raw.run(f"SELECT record_hashes FROM {raw.chain} WHERE first_position = ?", (first,))
    forged = bytes(hashes[0])[:32] + bytes(32) + bytes(hashes[0])[64:]  # type: ignore[call-overload]
    raw.run(f"UPDATE {raw.chain} SET record_hashes = ? WHERE first_position = ?", (forged, first))
    # Which side was edited the chain cannot tell: the link and the record both differ.
    assert _findings(log) == [(first, "chain_link"), (first + 1, "record_changed")]


def test_a_chain_row_removed_with_its_records_from_the_middle_breaks_the_next_link(tampered):
    log, raw = tampered()
    raw.drop_chain_triggers()
    rows = raw.chain_rows()
    (first, last), after = rows[len(rows) // 2], rows[len(rows) // 2 + 1]
    raw.run("DELETE FROM {t} WHERE {k} >= ? AND {k} <= ?", (first, last))
    raw.run(f"DELETE FROM {raw.chain} WHERE first_position = ?", (first,))
    assert _findings(log) == [(after[0], "chain_link")]


def test_a_chain_row_removed_alone_leaves_its_records_uncovered(tampered):
    log, raw = tampered()
    raw.drop_chain_triggers()
    rows = raw.chain_rows()
    (first, last), after = rows[len(rows) // 2], rows[len(rows) // 2 + 1]
    raw.run(f"DELETE FROM {raw.chain} WHERE first_position = ?", (first,))
    uncovered = [(p, "record_inserted") for p in range(first, last + 1)]
    assert _findings(log) == [*uncovered, (after[0], "chain_link")]


def test_a_chain_row_that_overlaps_the_one_before_is_a_violation(tampered):
    log, raw = tampered()
    raw.drop_chain_triggers()
    rows = log.chain_rows(0, 10_000)
    k = next(i for i in range(10, len(rows) - 1) if rows[i - 1][1] > rows[i - 1][0])
    (_, before, before_hashes, before_chain), (first, last, hashes, _) = rows[k - 1], rows[k]
    # A forger who knows the format: the row also claims the last position of the row
    # before it, with that record's true hash, and links properly to that row.
    hashes = before_hashes[-HASH_SIZE:] + hashes
    raw.run(f"DELETE FROM {raw.chain} WHERE first_position = ?", (first,))
    raw.run(
        f"INSERT INTO {raw.chain} VALUES (?, ?, ?, ?)",
        (before, last, hashes, link(before_chain, before, last, hashes)),
    )
    assert _findings(log) == [(before, "chain_overlap"), (rows[k + 1][0], "chain_link")]


def test_findings_past_the_limit_are_counted_not_listed(sqlite_url, capsys):
    run_demo(sqlite_url, tasks=150, seed=5)
    log = EventLog(sqlite_url)
    raw = RawStore(log)
    raw.drop_triggers()
    # Trailing whitespace: every payload still decodes, and every record hash differs.
    raw.run("UPDATE {t} SET state = CAST(state || ' ' AS BLOB)")
    head = log.head()
    assert head > MAX_FINDINGS + 100
    assert _findings(log) == [(p, "record_changed") for p in range(1, head + 1)]
    code, report = _audit_cli(log, capsys)
    assert code == 1
    assert len(_chain_findings(report)) == MAX_FINDINGS
    assert report["omitted_violations"] == head - MAX_FINDINGS
    assert main(["audit", "--store", log.url]) == 1
    text = capsys.readouterr().out
    assert f"{head - MAX_FINDINGS} more hash chain violation(s), not listed" in text
    log.close()


# --- with a seal beside the log (issue #16): the chain is still verified whole --------


def _forge_row(raw: RawStore, log: EventLog) -> None:
    oid, _, topic, state = raw.row(log.head())
    raw.run(
        "INSERT INTO {t} (originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?)",
        (oid, 999_999, topic, state),
    )


def _edit_chain_row(raw: RawStore, _log: EventLog) -> None:
    raw.drop_chain_triggers()
    first = raw.chain_rows()[5][0]
    raw.run(
        f"UPDATE {raw.chain} SET chain_hash = ? WHERE first_position = ?", (b"\x01" * 32, first)
    )


_TAMPERING: dict[str, Callable[[RawStore, EventLog], None]] = {
    "changed byte": lambda raw, log: raw.change(log.head() // 2),
    "padded payload": lambda raw, log: raw.pad(log.head() // 5),
    "deleted row": lambda raw, log: raw.run("DELETE FROM {t} WHERE {k} = ?", (log.head() // 3,)),
    "forged row": _forge_row,
    "edited chain row": _edit_chain_row,
}


@pytest.mark.parametrize("kind", list(_TAMPERING))
def test_tampering_inside_the_sealed_prefix_is_found_with_a_seal_present(tampered, kind):
    from tierlog.adapters.audit.run import audit

    log, raw = tampered()
    sealed = audit(log, parallel=False)
    assert sealed.clean and sealed.sealed_at == log.head()
    _TAMPERING[kind](raw, log)
    expected = _findings(log)  # the chain check from 0, alone and in the full replay
    assert expected
    report = audit(log, parallel=False)  # from the seal
    assert report.resumed_from == sealed.sealed_at
    chain = [(v.position, v.rule) for v in report.violations if v.aggregate_id == "log"]
    assert chain == expected
    assert report.sealed_at is None


def test_an_event_that_no_longer_decodes_beside_read_models_is_a_finding_not_a_crash(
    tampered, capsys
):
    # With live read models, the audit's rebuild reads every event: one that no longer
    # decodes must still give the chain's finding and exit 1, not "cannot read the store".
    log, raw = tampered()
    assert main(["project", "--store", log.url]) == 0
    changed = log.head() // 2
    raw.change(changed)  # the payload is no longer valid JSON
    capsys.readouterr()
    code, report = _audit_cli(log, capsys)
    assert code == 1 and not report["clean"]
    assert (changed, "record_changed") in _chain_findings(report)
