"""What a store failure means, and how to print a store: helpers for the log.

``storage_fault`` tells a fault of the storage under the log (disk full, read-only file
system, I/O error, a lost database connection: the same write may work later) from
everything else; ``open_failure`` says in one line why a store cannot be opened at all.
``redact_url`` and ``redact`` keep a DSN's password out of every line tierlog prints;
``check_postgres`` tries a PostgreSQL address once, within the connect timeout.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse, urlunparse

from tierlog.domain.errors import StoreUnusableError

REDACTED = "***"

# SQLite result codes (the primary code, before any "_" extension) that mean the storage
# failed, with what to tell the operator.
_SQLITE_FAULTS = {
    "SQLITE_FULL": "the disk is full",
    "SQLITE_READONLY": "the log is read-only",
    "SQLITE_IOERR": "an I/O error",
    "SQLITE_BUSY": "the database is locked by another process",
    "SQLITE_LOCKED": "the database is locked",
    "SQLITE_CANTOPEN": "the log file cannot be opened",
    "SQLITE_PROTOCOL": "the database is locked by another process",
}
# PostgreSQL SQLSTATE classes and codes that mean the server cannot store now.
_PG_FAULTS = {
    "53": "the database server is out of resources (disk full?)",
    "57": "the database server is shutting down or not accepting connections",
    "08": "the connection to the database server was lost",
    "25006": "the database is read-only (a standby?)",
    "58": "the database server had an I/O error",
}


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines, tabs) as one space."""
    return " ".join(str(text).split())


def redact_url(url: str) -> str:
    """A store URL fit to print: its password, if any, replaced by ``***``."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    host = parsed.netloc.rpartition("@")[2]
    user = quote(unquote(parsed.username or ""), safe="")
    return urlunparse(parsed._replace(netloc=f"{user}:{REDACTED}@{host}"))


def redact(text: str, *urls: str | None) -> str:
    """``text`` with the password of each store URL removed, as written in the URL and
    decoded (an error message may quote either), and each URL redacted."""
    for url in urls:
        if not url:
            continue
        text = text.replace(url, redact_url(url))
        password = urlparse(url).password
        if password:
            for form in {password, unquote(password)}:
                text = text.replace(form, REDACTED)
    return text


def describe(env: dict[str, str]) -> str:
    """Where a store is, for messages: the SQLite file, or PostgreSQL's host, port,
    database and schema (never the user's password)."""
    if env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite":
        return f"the SQLite log {env['SQLITE_DBNAME']}"
    return (
        f"PostgreSQL at {env['POSTGRES_HOST']}:{env['POSTGRES_PORT']} "
        f"(database {env['POSTGRES_DBNAME']}, schema {env['POSTGRES_SCHEMA']})"
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes (eventsourcing wraps the driver's errors in its own)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__


def _sqlite_fault(exc: sqlite3.Error) -> str | None:
    name = getattr(exc, "sqlite_errorname", "") or ""
    for code, reason in _SQLITE_FAULTS.items():
        if name == code or name.startswith(code + "_"):
            return reason
    # Errors raised before a result code is known (opening the file) say it in words.
    text = str(exc).lower()
    if "disk is full" in text:
        return _SQLITE_FAULTS["SQLITE_FULL"]
    if "readonly" in text or "read-only" in text:
        return _SQLITE_FAULTS["SQLITE_READONLY"]
    if "disk i/o error" in text:
        return _SQLITE_FAULTS["SQLITE_IOERR"]
    return None


def _postgres_fault(exc: BaseException) -> str | None:
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        return _PG_FAULTS.get(sqlstate) or _PG_FAULTS.get(sqlstate[:2])
    # psycopg's OperationalError without a SQLSTATE: the connection broke or timed out;
    # the pool's timeout (no connection in time) is one too.
    module = type(exc).__module__
    if module.startswith("psycopg_pool") or (
        module.startswith("psycopg") and type(exc).__name__ == "OperationalError"
    ):
        return _PG_FAULTS["08"]
    return None


def storage_fault(exc: BaseException) -> str | None:
    """Why ``exc`` is a fault of the storage (the same operation may work later), in
    words for the operator; None for anything else (a conflict, bad data, a bug)."""
    for link in _chain(exc):
        if isinstance(link, OSError) and link.errno is not None:
            return f"{link.strerror or 'an I/O error'} (errno {link.errno})"
        if isinstance(link, sqlite3.Error):
            return _sqlite_fault(link)
        if type(link).__module__.startswith("psycopg"):
            return _postgres_fault(link)
    return None


def _sqlite_open_failure(exc: sqlite3.Error, path: Path) -> str | None:
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    if name.startswith("SQLITE_NOTADB") or "not a database" in text:
        return f"{path} is not a SQLite database (is it corrupt, or another kind of file?)"
    if name.startswith("SQLITE_CORRUPT") or "malformed" in text:
        return f"{path} is corrupt ({one_line(exc)})"
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY")) or "unable to open" in text:
        folder = path.parent if path.parent.exists() else path
        if not os.access(folder, os.W_OK) or _read_only_fs(folder):
            return f"{path} is on a read-only file system or folder: the log must be writable"
        return f"cannot open {path} ({one_line(exc)})"
    return None


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def open_failure(exc: BaseException, env: dict[str, str]) -> str | None:
    """One line saying why a store cannot be opened, when ``exc`` settles that it cannot
    (retrying will not help); None when it may be a passing race (another process
    creating the same tables, a lock held for a moment)."""
    sqlite = env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite"
    for link in _chain(exc):
        if sqlite and isinstance(link, sqlite3.Error):
            return _sqlite_open_failure(link, Path(env["SQLITE_DBNAME"]))
        if not sqlite and type(link).__module__.startswith("psycopg"):
            if getattr(link, "sqlstate", None) == "3F000":  # invalid_schema_name
                return missing_schema(env)
            reason = _postgres_fault(link)
            return None if reason is None else f"cannot use {describe(env)}: {one_line(link)}"
    return None


def missing_schema(env: dict[str, str]) -> str:
    """The message for a PostgreSQL schema that does not exist, saying how to make it."""
    schema = env["POSTGRES_SCHEMA"]
    return (
        f"{describe(env)}: schema {schema!r} does not exist; create it "
        f'(CREATE SCHEMA "{schema}";) or start `tierlog serve --create-schema`'
    )


def probe_directory(path: Path, size: int = 64 * 1024) -> None:
    """Write, sync and remove ``size`` bytes in ``path``'s folder: an ``OSError`` if the
    file system cannot take a write now (full, read-only, failing)."""
    probe = path.parent / f".{path.name}.probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * size)
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        probe.unlink(missing_ok=True)


_PASSWORD_IN_DSN = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def redact_dsns(text: str) -> str:
    """``text`` with the password of any URL written in it (``scheme://user:pw@``)
    replaced by ``***``: for messages that may quote a DSN tierlog did not see."""
    return _PASSWORD_IN_DSN.sub(rf"\1{REDACTED}@", text)


def check_postgres(
    env: dict[str, str], connect_args: dict[str, Any], *, create_schema: bool = False
) -> None:
    """Connect once, within the connect timeout, and check the schema exists (creating it
    if ``create_schema``): a ``StoreUnusableError`` in one line naming host, port, database
    and schema, where eventsourcing's pool would retry for minutes."""
    import psycopg
    from psycopg import sql

    schema = env["POSTGRES_SCHEMA"]
    try:
        with psycopg.connect(**connect_args, autocommit=True) as conn:
            if create_schema:
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                )
            found = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)
            ).fetchone()
    except psycopg.Error as exc:
        timeout = env["POSTGRES_CONNECT_TIMEOUT"]
        raise StoreUnusableError(
            f"cannot connect to {describe(env)} (timeout {timeout} s): {one_line(exc)}",
            field="store",
        ) from exc
    if found is None:
        raise StoreUnusableError(missing_schema(env), field="store")
