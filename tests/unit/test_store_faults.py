"""What a store failure means (``storage_fault``, ``open_failure``) and how a store is
printed (``redact_url``, ``redact``, ``describe``): no password ever, one line always."""

from __future__ import annotations

import errno
import sqlite3

import psycopg.errors
import pytest
from eventsourcing.persistence import IntegrityError, OperationalError

from tierlog.adapters.store.event_log import store_env
from tierlog.adapters.store.faults import (
    describe,
    one_line,
    open_failure,
    redact,
    redact_dsns,
    redact_url,
    storage_fault,
)


def _sqlite(message: str, name: str) -> OperationalError:
    cause = sqlite3.OperationalError(message)
    cause.sqlite_errorname = name  # type: ignore[attr-defined]
    error = OperationalError(cause)
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("message", "name", "reason"),
    [
        ("database or disk is full", "SQLITE_FULL", "the disk is full"),
        ("attempt to write a readonly database", "SQLITE_READONLY", "the log is read-only"),
        ("disk I/O error", "SQLITE_IOERR_WRITE", "an I/O error"),
        ("database is locked", "SQLITE_BUSY", "the database is locked by another process"),
    ],
)
def test_sqlite_storage_faults_are_named(message, name, reason):
    assert storage_fault(_sqlite(message, name)) == reason


def test_errors_that_are_not_the_storage_are_not_faults():
    assert storage_fault(IntegrityError("UNIQUE constraint failed")) is None
    assert storage_fault(_sqlite("no such table: stored_events", "SQLITE_ERROR")) is None
    assert storage_fault(ValueError("a bug")) is None
    assert storage_fault(RecursionError()) is None


def test_os_errors_are_faults():
    assert "errno 28" in str(storage_fault(OSError(errno.ENOSPC, "No space left on device")))


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.DiskFull("could not extend file"),
        psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"),
        psycopg.errors.AdminShutdown("terminating connection"),
        psycopg.OperationalError("server closed the connection unexpectedly"),
    ],
)
def test_postgres_storage_faults_are_named(error):
    wrapped = OperationalError(error)
    wrapped.__cause__ = error
    assert storage_fault(wrapped) is not None


def test_postgres_errors_that_are_not_the_storage_are_not_faults():
    assert storage_fault(psycopg.errors.UniqueViolation("duplicate key")) is None
    assert storage_fault(psycopg.errors.UndefinedTable("no such table")) is None


def test_a_missing_schema_says_how_to_create_it():
    env = store_env("postgresql://u:pw@db.example:6543/fleet?schema=prod")
    said = open_failure(psycopg.errors.InvalidSchemaName('schema "prod" does not exist'), env)
    assert said is not None
    for part in ("db.example:6543", "fleet", "prod", 'CREATE SCHEMA "prod"', "--create-schema"):
        assert part in said
    assert "pw" not in said.replace("prod", "")


def test_describe_names_host_port_database_and_schema_but_no_password():
    env = store_env("postgresql://tierlog:hunter2@10.0.0.5:5433/fleet?schema=blue")
    assert describe(env) == "PostgreSQL at 10.0.0.5:5433 (database fleet, schema blue)"
    sqlite = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": "logs/a.db"}
    assert describe(sqlite) == "the SQLite log logs/a.db"


def test_the_connect_timeout_reaches_the_store_environment():
    env = store_env("postgresql://u@h/db", connect_timeout_s=2.5)
    assert env["POSTGRES_CONNECT_TIMEOUT"] == "3"  # libpq counts whole seconds
    assert store_env("postgresql://u@h/db")["POSTGRES_CONNECT_TIMEOUT"] == "5"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://tierlog:hunter2@h:5432/db?schema=s",
            "postgresql://tierlog:***@h:5432/db?schema=s",
        ),
        ("postgresql://tierlog:p%40ss%2Fw@h/db", "postgresql://tierlog:***@h/db"),
        ("postgresql://tierlog@h/db", "postgresql://tierlog@h/db"),
        ("sqlite:///./tierlog.db", "sqlite:///./tierlog.db"),
    ],
)
def test_redact_url_hides_only_the_password(url, shown):
    assert redact_url(url) == shown


def test_redact_removes_the_password_in_every_form():
    url = "postgresql://tierlog:p%40ss-9@h/db"
    text = f"cannot use {url}: password 'p@ss-9' or p%40ss-9 was refused"
    said = redact(text, url, None)
    assert "p@ss-9" not in said and "p%40ss-9" not in said
    assert "postgresql://tierlog:***@h/db" in said


def test_redact_dsns_catches_urls_it_was_not_told_of():
    said = redact_dsns("x postgres://a:b-secret@host/db y mysql://root:toor@h/z")
    assert "b-secret" not in said and "toor" not in said
    assert said == "x postgres://a:***@host/db y mysql://root:***@h/z"


def test_one_line():
    assert one_line("connection failed:\n\tIs the server running?\n") == (
        "connection failed: Is the server running?"
    )
