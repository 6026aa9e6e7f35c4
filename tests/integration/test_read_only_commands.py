"""Read-only commands never create or change a store (issue #10, item 7).

Each of ``audit``, ``at``, ``diff``, ``explain`` and ``whatif`` is run against each
kind of bad store: a mistyped path, a missing folder, an empty file, a folder, a file
that is not SQLite, another application's SQLite file (rollback journal and WAL), an
event store without tierlog's chain; on PostgreSQL a missing schema, a missing
database, an empty schema and a schema of another application. Each must exit 2 with
one line, and leave the folder (names, sizes, times, bytes) or the catalog as it was.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import psycopg
import pytest

from tierlog.adapters.cli import main
from tierlog.adapters.history.checkpoints import checkpoints_path, state_at
from tierlog.adapters.store.event_log import EventLog
from tierlog.adapters.tools.demo import run_demo
from tierlog.domain import events as ev
from tierlog.domain.errors import StoreError


def _commands(config: Path) -> list[list[str]]:
    return [
        ["audit"],
        ["audit", "--json"],
        ["at", "--position", "1"],
        ["at", "--time", "2026-01-01T00:00:00+00:00"],
        ["diff", "0", "1"],
        ["explain", str(uuid.uuid4())],
        ["whatif", "--config", str(config)],
    ]


def _listing(folder: Path) -> list[tuple[str, int, int, str]]:
    """Every entry under ``folder``: name, size, modification time and content hash."""
    found = []
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            path = Path(root, name)
            st = path.stat()
            content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
            found.append((str(path.relative_to(folder)), st.st_size, st.st_mtime_ns, content))
    return sorted(found)


def _sqlite_file(path: Path, statements: list[str], *, wal: bool = False) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    for statement in statements:
        conn.execute(statement)
    conn.close()


def _bad_sqlite_stores(folder: Path) -> dict[str, Path]:
    """Each kind of bad SQLite store, made in ``folder``."""
    (folder / "empty.db").write_bytes(b"")
    (folder / "folder.db").mkdir()
    (folder / "notes.db").write_text("not a database at all\n" * 20)
    _sqlite_file(
        folder / "other.db",
        [
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)",
            "INSERT INTO customers (name) VALUES ('ada')",
        ],
    )
    _sqlite_file(
        folder / "other-wal.db",
        ["CREATE TABLE orders (id INTEGER PRIMARY KEY)", "INSERT INTO orders VALUES (1)"],
        wal=True,
    )
    _sqlite_file(
        folder / "other-es.db",
        ["CREATE TABLE stored_events (originator_id TEXT, originator_version INTEGER)"],
    )
    return {
        "mistyped path": folder / "tierlgo.db",
        "missing folder": folder / "no-such-folder" / "tierlog.db",
        "empty file": folder / "empty.db",
        "folder": folder / "folder.db",
        "not SQLite": folder / "notes.db",
        "another application's file": folder / "other.db",
        "another application's WAL file": folder / "other-wal.db",
        "an event store without tierlog's chain": folder / "other-es.db",
    }


def _run(capsys: pytest.CaptureFixture[str], args: list[str], store: str) -> tuple[int, str]:
    code = main([*args, "--store", store])
    captured = capsys.readouterr()
    return code, captured.err


def test_read_only_commands_refuse_bad_sqlite_stores_and_change_nothing(tmp_path, capsys):
    folder = tmp_path / "stores"
    folder.mkdir()
    config = tmp_path / "new.toml"
    config.write_text("claude_enabled = false\n")
    stores = _bad_sqlite_stores(folder)
    before = _listing(folder)
    for kind, path in stores.items():
        for args in _commands(config):
            code, err = _run(capsys, args, f"sqlite:///{path}")
            lines = err.strip().splitlines()
            assert code == 2, (kind, args, err)
            assert len(lines) == 1 and lines[0].startswith("tierlog: "), (kind, args, err)
            assert "Traceback" not in err
            assert _listing(folder) == before, (kind, args)


def test_the_messages_say_what_is_wrong(tmp_path, capsys):
    stores = _bad_sqlite_stores(tmp_path)
    expected = {
        "mistyped path": "no log at",
        "missing folder": "no log at",
        "empty file": "holds no tierlog log",
        "folder": "is a folder, not a tierlog log",
        "not SQLite": "is not a SQLite database",
        "another application's file": "is not a tierlog log (tables customers)",
        "another application's WAL file": "is not a tierlog log (tables orders)",
        "an event store without tierlog's chain": "without tierlog's hash chain",
    }
    for kind, path in stores.items():
        _, err = _run(capsys, ["audit"], f"sqlite:///{path}")
        assert expected[kind] in err, (kind, err)


def _catalog(dsn: str, schemas: list[str], databases: list[str]) -> list[tuple[str, ...]]:
    """Everything in ``schemas`` (schemas, relations, functions, triggers) and which
    of ``databases`` exist."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows: list[tuple[str, ...]] = [
            ("schema", n)
            for (n,) in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (schemas,)
            )
        ]
        rows += conn.execute(
            "SELECT 'relation', n.nspname, c.relname, c.relkind::text FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY(%s)",
            (schemas,),
        ).fetchall()
        rows += conn.execute(
            "SELECT 'function', n.nspname, p.proname FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = ANY(%s)",
            (schemas,),
        ).fetchall()
        rows += conn.execute(
            "SELECT 'trigger', n.nspname, t.tgname FROM pg_trigger t JOIN pg_class c"
            " ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = ANY(%s)",
            (schemas,),
        ).fetchall()
        rows += [
            ("database", d)
            for (d,) in conn.execute(
                "SELECT datname FROM pg_database WHERE datname = ANY(%s)", (databases,)
            )
        ]
    return sorted(tuple(str(v) for v in row) for row in rows)


def _with_schema(url: str, schema: str, dbname: str | None = None) -> str:
    parsed = urlparse(url)
    path = f"/{dbname}" if dbname else parsed.path
    return urlunparse(parsed._replace(path=path, query=f"schema={schema}"))


@pytest.fixture
def pg_bad_stores(pg_url: str) -> Iterator[tuple[str, dict[str, str], list[str]]]:
    """The base DSN, each kind of bad PostgreSQL store, and the schemas involved."""
    dsn = pg_url.split("?")[0]
    empty = urlparse(pg_url).query.removeprefix("schema=")
    other = "t_other_" + uuid.uuid4().hex[:10]
    missing = "t_missing_" + uuid.uuid4().hex[:10]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{other}"')
        conn.execute(f'CREATE TABLE "{other}".invoices (id int PRIMARY KEY)')
    stores = {
        "missing schema": _with_schema(pg_url, missing),
        "missing database": _with_schema(pg_url, empty, "tierlog_no_such_db"),
        "empty schema": pg_url,
        "another application's schema": _with_schema(pg_url, other),
    }
    yield dsn, stores, [empty, other, missing]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{other}" CASCADE')
        conn.execute(f'DROP SCHEMA IF EXISTS "{missing}" CASCADE')


@pytest.mark.postgres
def test_read_only_commands_refuse_bad_postgres_stores_and_change_nothing(
    pg_bad_stores, tmp_path, capsys
):
    dsn, stores, schemas = pg_bad_stores
    config = tmp_path / "new.toml"
    config.write_text("claude_enabled = false\n")
    databases = ["tierlog_no_such_db"]
    before = _catalog(dsn, schemas, databases)
    for kind, url in stores.items():
        for args in _commands(config):
            code, err = _run(capsys, args, url)
            lines = err.strip().splitlines()
            assert code == 2, (kind, args, err)
            assert len(lines) == 1 and lines[0].startswith("tierlog: "), (kind, args, err)
            assert _catalog(dsn, schemas, databases) == before, (kind, args)
    _, err = _run(capsys, ["audit"], stores["missing schema"])
    assert "CREATE SCHEMA" in err


def test_a_read_only_log_refuses_appends(sqlite_url):
    run_demo(sqlite_url, tasks=5, seed=1)
    log = EventLog(sqlite_url, read_only=True)
    head = log.head()
    event = ev.AgentDeregistered(
        originator_id=uuid.uuid4(), originator_version=1, timestamp=datetime.now(UTC), agent_id="a"
    )
    try:
        with pytest.raises(StoreError, match="read-only"):
            log.append([event])
        assert log.head() == head
    finally:
        log.close()


def test_time_travel_on_a_good_log_writes_checkpoints_only_when_it_passes_one(tmp_path):
    url = f"sqlite:///{tmp_path / 'tt.db'}"
    run_demo(url, tasks=20, seed=3)
    log = EventLog(url, read_only=True)
    try:
        head = log.head()
        state_at(log, head)  # far fewer than EVERY events: no checkpoint, no file
        assert not checkpoints_path(str(tmp_path / "tt.db")).exists()
        state_at(log, head, every=50, write=False)  # not allowed to write: none
        assert not checkpoints_path(str(tmp_path / "tt.db")).exists()
        state_at(log, head, every=50)  # passes checkpoints: the file appears
        assert checkpoints_path(str(tmp_path / "tt.db")).exists()
    finally:
        log.close()


@pytest.mark.postgres
def test_read_only_commands_on_a_good_postgres_log_leave_the_catalog_as_it_was(
    pg_url, tmp_path, capsys
):
    run_demo(pg_url, tasks=10, seed=4)
    dsn, schema = pg_url.split("?")[0], pg_url.split("schema=")[1]
    config = tmp_path / "new.toml"
    config.write_text("claude_enabled = false\n")
    before = _catalog(dsn, [schema], [])
    for args in _commands(config):
        code, err = _run(capsys, args, pg_url)
        assert code in (0, 2), (args, err)  # explain of an unknown task is a clear 2
        assert "Traceback" not in err
        # A clean audit leaves its seal beside the log (issue #16): that table (and its
        # key's index) and nothing else.
        assert _without_seal(_catalog(dsn, [schema], [])) == before, args


def _without_seal(catalog: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    return [row for row in catalog if not any("tierlog_audit_seals" in str(v) for v in row)]
