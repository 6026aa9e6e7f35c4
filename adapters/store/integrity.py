"""Start-up integrity: the checks ``serve`` runs on a store before it writes anything.

Two cheap checks, each refusing with one line: the SQLite file's own structure
(``PRAGMA quick_check``: b-trees, pages, record formats, so a corrupt index is caught
before an append lands in it), and the hash chain at the head (the last chain row ends
where the log ends, its record hashes are those of the last events, and it links to
the row before). The whole chain is the audit's work; this covers what a crash, a
truncation or a hand edit at the end would break.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tierlog.adapters.store.chain_reads import LAST_COVERED
from tierlog.adapters.store.event_log import EventLog, raw_id_bytes
from tierlog.adapters.store.hash_chain import GENESIS, link, record_hash
from tierlog.adapters.store.probe import sqlite_read_only
from tierlog.domain.errors import StoreUnusableError

AUDIT_HINT = "run `tierlog audit` for the whole story"


def quick_check(path: Path) -> None:
    """``PRAGMA quick_check`` of an existing SQLite file, read-only; refuses a corrupt
    one with the first problem SQLite names."""
    with sqlite_read_only(path) as conn:
        try:
            rows = conn.execute("PRAGMA quick_check(5)").fetchall()
        except sqlite3.Error as exc:  # so broken that the check cannot run
            raise StoreUnusableError(f"{path} is corrupt: {exc}") from exc
    problems = [str(row[0]) for row in rows if row[0] != "ok"]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        first = " ".join(problems[0].split())
        raise StoreUnusableError(f"{path} is corrupt (SQLite quick_check: {first}{more})")


def _heads(log: EventLog) -> tuple[int, int]:
    """The log's last position and the last one its chain covers, read in one statement:
    one snapshot, so a node appending meanwhile (each append commits its events and
    their chain row together) cannot make them differ."""
    events, chain = log.recorder.events_table_name, log.recorder.chain_table_name
    if log.is_postgres:
        schema = log.env["POSTGRES_SCHEMA"]
        covered = LAST_COVERED.format(table=f'"{schema}"."{chain}"')
        sql = (
            f'SELECT (SELECT MAX(notification_id) FROM "{schema}"."{events}") AS head, '
            f"{covered} AS chained"
        )
        with log.recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(sql)
            row = curs.fetchone()
            values = (row["head"], row["chained"]) if row else (0, 0)
    else:
        sql = f"SELECT (SELECT MAX(rowid) FROM {events}), {LAST_COVERED.format(table=chain)}"
        with log.recorder.datastore.transaction(commit=False) as curs:
            curs.execute(sql)
            found = curs.fetchone()
            values = (found[0], found[1]) if found else (0, 0)
    return int(values[0] or 0), int(values[1] or 0)


def check_chain_at_head(log: EventLog) -> None:
    """The last chain row covers exactly the last events, with their hashes, linked to
    the row before; ``StoreUnusableError`` naming the positions if not."""
    head, chained = _heads(log)
    if head != chained:
        why = "events were removed from its end" if head < chained else "events have no chain"
        raise StoreUnusableError(
            f"the log ends at position {head} but its hash chain at {chained} ({why}); "
            + AUDIT_HINT
        )
    if head == 0:
        return
    row = log.chain_row_at(head)
    if row is None:  # unreachable while chain_head() == head, unless rows are malformed
        raise StoreUnusableError(f"no hash chain row covers the head {head}; " + AUDIT_HINT)
    first, last, hashes, chain_hash = row
    found = b"".join(
        record_hash(position, raw_id_bytes(raw_id), version, topic, bytes(state))
        for batch in log.iter_raw(first - 1, last)
        for position, raw_id, version, topic, state in batch
    )
    if found != hashes:
        raise StoreUnusableError(
            f"the events at positions {first}..{last} (the head) do not match their hash "
            "chain row (edited or replaced); " + AUDIT_HINT
        )
    previous = _chain_hash_before(log, first)
    if link(previous, first, last, hashes) != chain_hash:
        raise StoreUnusableError(
            f"the hash chain row of positions {first}..{last} (the head) does not link to "
            "the row before it; " + AUDIT_HINT
        )


def _chain_hash_before(log: EventLog, first: int) -> bytes:
    """The chain hash of the row before the one starting at ``first`` (``GENESIS`` if
    none)."""
    row = log.chain_row_before(first)
    return GENESIS if row is None else row[3]
