"""Start-up integrity (issue #10, item 3): before ``serve`` writes anything it checks
the store, and refuses a corrupt file or a log whose hash chain is broken at its head."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from wiring import runtime_on

from tierlog.adapters import bootstrap
from tierlog.adapters.settings import Settings
from tierlog.adapters.store.event_log import EventLog, sqlite_file
from tierlog.domain import commands as cmd
from tierlog.domain.clock import VirtualClock
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.errors import StoreUnusableError


def _fill(url: str, batches: int = 3, per_batch: int = 40) -> None:
    runtime = runtime_on(url, SchedulerConfig(), VirtualClock())
    for b in range(batches):
        runtime.execute_batch(
            [cmd.SubmitTask(description=f"task {b}.{i}") for i in range(per_batch)]
        )
    runtime.log.close()


def _page_size_and_index_roots(path: Path) -> tuple[int, list[int]]:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    roots = [
        int(root)
        for (root,) in conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE type = 'index' AND tbl_name = 'stored_events'"
        )
    ]
    conn.close()
    return page_size, roots


def test_a_copy_with_a_corrupt_index_is_refused_and_left_as_it_was(tmp_path):
    good = tmp_path / "good.db"
    _fill(f"sqlite:///{good}", batches=10, per_batch=50)
    page_size, roots = _page_size_and_index_roots(good)
    assert roots, "the events table has an index to corrupt"
    copy = tmp_path / "copy.db"
    shutil.copy(good, copy)
    with copy.open("r+b") as handle:  # junk over the index's root page
        handle.seek((roots[0] - 1) * page_size)
        handle.write(bytes(range(251)) * (page_size // 251) + b"\xff" * (page_size % 251))
    before = copy.read_bytes()
    with pytest.raises(StoreUnusableError, match="is corrupt"):
        bootstrap.check_store(Settings(store=f"sqlite:///{copy}"))
    assert copy.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.db", "good.db"]
    log = bootstrap.check_store(Settings(store=f"sqlite:///{good}"))  # the original passes
    assert log is not None
    log.close()


def test_a_new_store_passes_and_is_not_created_by_the_check(tmp_path):
    assert bootstrap.check_store(Settings(store=f"sqlite:///{tmp_path / 'new.db'}")) is None
    assert not list(tmp_path.iterdir())


class _Tamper:
    """Raw SQL on a store, past tierlog and past its append-only triggers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = sqlite_file(url)
        log = EventLog(url)
        self.events, self.chain = log.recorder.events_table_name, log.recorder.chain_table_name
        self.schema = log.env.get("POSTGRES_SCHEMA", "")
        self.dsn = url.split("?")[0]
        log.close()

    @property
    def position(self) -> str:
        return "rowid" if self.path is not None else "notification_id"

    def run(self, sql: str) -> None:
        sql = sql.format(events=self.events, chain=self.chain, position=self.position)
        if self.path is not None:
            conn: Any = sqlite3.connect(self.path, isolation_level=None)
            for table in (self.events, self.chain):
                for action in ("update", "delete"):
                    conn.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
            conn.execute(sql)
            conn.close()
            return
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{self.schema}"')
            for table in (self.events, self.chain):
                conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            conn.execute(sql)


TAMPERING: dict[str, tuple[str, str]] = {
    "an event appended past the chain": (
        "INSERT INTO {events} (originator_id, originator_version, topic, state) "
        "SELECT originator_id, originator_version + 1000, topic, state FROM {events} "
        "ORDER BY {position} DESC LIMIT 1",
        "events have no chain",
    ),
    "the last event deleted": (
        "DELETE FROM {events} WHERE {position} = (SELECT MAX({position}) FROM {events})",
        "events were removed from its end",
    ),
    "the last event edited": (
        "UPDATE {events} SET originator_version = originator_version + 1000 "
        "WHERE {position} = (SELECT MAX({position}) FROM {events})",
        "do not match their hash chain row",
    ),
    "the last chain row edited": (
        "UPDATE {chain} SET chain_hash = record_hashes WHERE last_position = "
        "(SELECT MAX(last_position) FROM {chain})",
        "does not link to the row before",
    ),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERING))
def test_a_log_broken_at_its_head_is_refused(store_url: str, tampering: str):
    _fill(store_url)
    assert bootstrap.check_store(Settings(store=store_url)) is not None
    sql, message = TAMPERING[tampering]
    _Tamper(store_url).run(sql)
    with pytest.raises(StoreUnusableError, match=message):
        bootstrap.preflight(Settings(store=store_url))


def test_an_empty_log_passes(store_url: str):
    EventLog(store_url).close()  # the tables, no events
    assert bootstrap.preflight(Settings(store=store_url)) == []
