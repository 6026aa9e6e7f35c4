"""Shared fixtures: real stores (a SQLite file; PostgreSQL when reachable)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PG_DSN = os.environ.get("TIERLOG_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_reason() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL not reachable at {PG_DSN} ({exc.__class__.__name__}: {exc})"
    return None


_PG_REASON = _postgres_reason()


def _drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _new_pg_store() -> tuple[str, str]:
    if _PG_REASON is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL tests: {_PG_REASON}")
        pytest.skip(_PG_REASON)
    import psycopg

    schema = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{PG_DSN}?schema={schema}", schema


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty log on each store technology."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'log.db'}"
        return
    url, schema = _new_pg_store()
    yield url
    _drop_schema(schema)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite log file."""
    return f"sqlite:///{tmp_path / 'log.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL log in its own schema."""
    url, schema = _new_pg_store()
    yield url
    _drop_schema(schema)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """A factory of fresh, empty logs (one per call) on each store technology."""
    schemas: list[str] = []
    counter = iter(range(1_000_000))

    def make() -> str:
        if request.param == "sqlite":
            return f"sqlite:///{tmp_path / f'log-{next(counter)}.db'}"
        url, schema = _new_pg_store()
        schemas.append(schema)
        return url

    yield make
    for schema in schemas:
        _drop_schema(schema)
