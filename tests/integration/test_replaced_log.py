"""History is never discarded silently (issue #10, item 2): read models and checkpoints
that are ahead of their log, or disagree with its chain, stop ``serve`` and ``project``
with both positions named; ``--accept-replaced-log`` keeps them aside and rebuilds."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

import psycopg
import pytest
from wiring import runner_on, runtime_on

from tierlog.adapters import bootstrap
from tierlog.adapters.cli import main
from tierlog.adapters.history.checkpoints import state_at
from tierlog.adapters.settings import Settings
from tierlog.adapters.store.event_log import EventLog
from tierlog.adapters.store.lineage import ReplacedLogError
from tierlog.domain import commands as cmd
from tierlog.domain.clock import VirtualClock
from tierlog.domain.config import SchedulerConfig


def _fill(url: str, word: str, n: int) -> int:
    runtime = runtime_on(url, SchedulerConfig(), VirtualClock())
    runtime.execute_batch([cmd.SubmitTask(description=f"{word} {i}") for i in range(n)])
    head = runtime.log.head()
    runtime.log.close()
    return head


def _project_and_checkpoint(url: str) -> int:
    """Read models caught up with the log, and checkpoints along it; returns the head."""
    runner = runner_on(url)
    runner.run_until_caught_up()
    head = runner.log.head()
    runner.close()
    runner.log.close()
    log = EventLog(url, read_only=True)
    state_at(log, head, every=20)
    log.close()
    return head


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def _truncate_log(folder: Path, name: str) -> None:
    """The log file cut to 0 bytes (its WAL gone), the derived files left beside it."""
    for side in folder.glob(f"{name}-*"):
        side.unlink()
    (folder / name).write_bytes(b"")


def test_read_models_and_checkpoints_ahead_of_a_truncated_log_stop_the_start(tmp_path):
    url = f"sqlite:///{tmp_path / 'tierlog.db'}"
    _fill(url, "old", 60)
    head = _project_and_checkpoint(url)
    _truncate_log(tmp_path, "tierlog.db")
    before = _digests(tmp_path)
    with pytest.raises(ReplacedLogError) as refused:
        bootstrap.preflight(Settings(store=url))
    message = refused.value.message
    assert f"the read models are at position {head} but the log's head is at 0" in message
    assert "--accept-replaced-log" in message and "\n" not in message
    assert _digests(tmp_path) == before  # nothing written, nothing rebuilt

    kept = bootstrap.preflight(Settings(store=url), accept_replaced_log=True)
    assert [k.split(" as ")[0] for k in kept] == [
        "the read models",
        "the checkpoints",
    ]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not (tmp_path / "tierlog.read.db").exists()
    assert not (tmp_path / "tierlog.checkpoints.db").exists()
    kept_read = [n for n in names if re.fullmatch(r"tierlog\.read\.db\.replaced-\d{8}T\d{6}Z", n)]
    assert len(kept_read) == 1 and any(
        n.startswith("tierlog.checkpoints.db.replaced-") for n in names
    )
    old = sqlite3.connect(tmp_path / kept_read[0]).execute("SELECT COUNT(*) FROM rm_tasks")
    assert old.fetchone()[0] == 60  # the old history, kept whole

    system = bootstrap.build_system(Settings(store=url), clock=VirtualClock())
    try:
        system.start()  # a new log and fresh read models
        assert system.runner.store.query("SELECT COUNT(*) FROM rm_tasks")[0][0] == 0
    finally:
        system.close()


def test_checkpoints_alone_ahead_of_the_log_stop_the_start(tmp_path):
    url = f"sqlite:///{tmp_path / 'tierlog.db'}"
    _fill(url, "old", 60)
    _project_and_checkpoint(url)
    (tmp_path / "tierlog.read.db").unlink()
    _truncate_log(tmp_path, "tierlog.db")
    with pytest.raises(ReplacedLogError, match="the checkpoints are at position"):
        bootstrap.preflight(Settings(store=url))


def test_read_models_of_another_log_of_the_same_length_disagree(tmp_path):
    url = f"sqlite:///{tmp_path / 'tierlog.db'}"
    head = _fill(url, "old", 30)
    _project_and_checkpoint(url)
    for leftover in tmp_path.glob("tierlog.db*"):
        leftover.unlink()
    assert _fill(url, "new", 30) == head  # as long, but other events
    with pytest.raises(ReplacedLogError) as refused:
        bootstrap.preflight(Settings(store=url))
    assert f"the read models at position {head} do not match the log there" in (
        refused.value.message
    )


def test_read_models_behind_their_own_log_start(tmp_path):
    url = f"sqlite:///{tmp_path / 'tierlog.db'}"
    _fill(url, "old", 30)
    _project_and_checkpoint(url)
    _fill(url, "more", 30)  # the log moved on: the read models are only behind
    assert bootstrap.preflight(Settings(store=url)) == []


def test_derived_files_a_kill_left_empty_count_as_none(tmp_path):
    # SQLite writes a new file's first page only at its first commit: a serve killed
    # in between leaves 0-byte read models or checkpoints, which must not brick the start.
    url = f"sqlite:///{tmp_path / 'tierlog.db'}"
    _fill(url, "task", 30)
    for name in ("tierlog.read.db", "tierlog.checkpoints.db"):
        (tmp_path / name).write_bytes(b"")
    assert bootstrap.preflight(Settings(store=url)) == []
    system = bootstrap.build_system(Settings(store=url))
    try:
        system.start()
        assert system.runner.log.head() == system.log.head() > 0
        assert all(lag == 0 for lag in system.runner.lag().values())
    finally:
        system.close()
    assert bootstrap.preflight(Settings(store=url)) == []


def test_project_refuses_then_keeps_aside_on_request(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'tierlog.db'}"
    _fill(url, "old", 40)
    head = _project_and_checkpoint(url)
    for leftover in tmp_path.glob("tierlog.db*"):
        leftover.unlink()
    _fill(url, "new", 5)
    assert main(["project", "--store", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"at position {head} but the log's head is at" in err[0]
    assert main(["project", "--store", url, "--accept-replaced-log"]) == 0
    assert "kept the read models as" in capsys.readouterr().err
    assert any(p.name.startswith("tierlog.read.db.replaced-") for p in tmp_path.iterdir())


@pytest.mark.postgres
def test_postgres_read_models_of_a_dropped_log_are_kept_in_a_schema(pg_url):
    _fill(pg_url, "old", 25)
    head = _project_and_checkpoint(pg_url)
    schema = pg_url.split("schema=")[1]
    dsn = pg_url.split("?")[0]
    with psycopg.connect(dsn, autocommit=True) as conn:  # the log is gone, not its models
        conn.execute(f'DROP TABLE "{schema}".tierlog_events, "{schema}".tierlog_events_chain')
    with pytest.raises(ReplacedLogError, match=f"at position {head} but the log's head is at 0"):
        bootstrap.preflight(Settings(store=pg_url))
    kept = bootstrap.preflight(Settings(store=pg_url), accept_replaced_log=True)
    kept_schema = re.search(r"schema '([^']+)'", kept[0])
    assert kept_schema is not None
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            moved = conn.execute(f'SELECT COUNT(*) FROM "{kept_schema[1]}".rm_tasks').fetchone()
            assert moved is not None and moved[0] == 25
            left = conn.execute(
                "SELECT COUNT(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relkind = 'r'",
                (schema,),
            ).fetchone()
            assert left is not None and left[0] == 0
        assert bootstrap.preflight(Settings(store=pg_url)) == []  # a new log may start
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{kept_schema[1]}" CASCADE')
