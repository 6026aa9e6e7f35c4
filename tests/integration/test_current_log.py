"""Logs written by the release of commit 495766a (stored names; ``tests/data/README.md``),
checked in as a SQLite file and as a PostgreSQL dump: every later release must decode
them, audit them clean and keep appending to them. Both are loaded into fresh copies (a
file in ``tmp_path``, a new schema): the checked-in files are never changed."""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from releases import ADDED_SINCE_CHECKED_IN_LOGS, as_encoded_then
from wiring import runtime_on

from tierlog.adapters.audit.run import audit
from tierlog.adapters.store.codec import topic_of
from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import commands as cmd
from tierlog.domain import events as ev
from tierlog.domain.clock import VirtualClock
from tierlog.domain.config import SchedulerConfig

DATA = Path(__file__).parents[1] / "data"
SQLITE_LOG, PG_DUMP = DATA / "log-495766a.db", DATA / "log-495766a.pg.sql"
SHA256 = {
    SQLITE_LOG: "d822f6c98c07968d14ef8bb5a278ff4448298d8e2e32498f8360d3d86e983035",
    PG_DUMP: "831875026b61b79cd6dbea136d59e63a05210d9045b14600f96f4bb80d918d1d",
}
EVENTS = 441  # each log's head (make_log_495766a.py.txt printed it)
DUMPED_SCHEMA = "tierlog_fixture_495766a"
# The configuration both logs recorded last: a runtime with it appends no
# SchedulerConfigured, so what it appends below is the command's own events.
CONFIG = SchedulerConfig(lease_s=60.0, fallback_wait_s=5.0, default_model="llama3:8b")


def load_dump(url: str) -> None:
    """The PostgreSQL dump, restored into the empty schema of the store ``url``. Its psql
    meta-commands (``\\restrict``, ``\\unrestrict``) are left out, there being no psql
    here, and so is its ``CREATE SCHEMA``."""
    import psycopg

    dsn, _, schema = url.rpartition("?schema=")
    text = PG_DUMP.read_text()
    kept = (line for line in text.splitlines() if not line.startswith("\\"))
    sql = "\n".join(kept).replace(f"CREATE SCHEMA {DUMPED_SCHEMA};", "")
    sql = re.sub(rf"\b{DUMPED_SCHEMA}\b", schema, sql)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.encode())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def current_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh copy of the current release's log, on each store technology."""
    if request.param == "sqlite":
        copy = tmp_path / "current.db"
        shutil.copyfile(SQLITE_LOG, copy)
        yield f"sqlite:///{copy}"
        return
    url: str = request.getfixturevalue("pg_url")  # a new, empty schema (or a skip)
    load_dump(url)
    yield url


def _audited(url: str) -> int:
    log = EventLog(url)
    try:
        report = audit(log, parallel=False)
    finally:
        log.close()
    assert report.clean, report.violations[:3]
    return report.events


def test_the_checked_in_files_are_the_ones_that_release_wrote():
    for path, digest in SHA256.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, path.name
    assert PG_DUMP.read_text().count(f"INSERT INTO {DUMPED_SCHEMA}.tierlog_events ") == EVENTS


def test_every_event_decodes_as_its_current_type_and_reencodes_to_its_bytes(current_log):
    log = EventLog(current_log)
    try:
        events = list(log.iter_events())
        assert [p for p, _ in events] == list(range(1, EVENTS + 1))
        # every type the release had is there
        assert {type(e) for _, e in events} == set(ev.EVENT_TYPES) - ADDED_SINCE_CHECKED_IN_LOGS
        raw = [row for rows in log.iter_raw(batch=200) for row in rows]
        for (at, _, _, topic, state), (position, event) in zip(raw, events, strict=True):
            assert at == position
            assert topic == topic_of(type(event))  # stored under its current name
            # Nothing lost or changed (but the fields added since, at their defaults).
            encoded = as_encoded_then(type(event).stored_name, log.codec.encode(event))
            assert encoded == bytes(state)
    finally:
        log.close()


def test_the_log_audits_clean_and_takes_new_events(current_log):
    assert _audited(current_log) == EVENTS
    log = EventLog(current_log)
    last = log.read(EVENTS - 1, 1)[0][1].timestamp
    runtime = runtime_on(log, CONFIG, VirtualClock(last))
    try:
        assert runtime.state.position == EVENTS
        task = runtime.execute(cmd.SubmitTask(description="later", needed_capabilities=["x"]))
        assert runtime.read(lambda state: state.tasks[task.task_id].state) == "queued"
    finally:
        runtime.stop()
        log.close()
    assert _audited(current_log) > EVENTS
