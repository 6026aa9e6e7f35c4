"""The core bench's submit->assigned figures beside their raw baselines (issue #17)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tierlog.adapters.settings import Settings
from tierlog.adapters.tools.bench import (
    append_only_rate,
    bench_submit_to_assigned,
    log_rows,
)
from tierlog.adapters.tools.bench_fleet import fleet_on, time_submissions
from tierlog.adapters.tools.bench_postgres import (
    bench_submit_to_assigned_postgres,
    scratch_schema,
    with_schema,
)
from tierlog.domain.errors import ValidationError


def _bench_schemas(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tierlog\\_bench%'"
        ).fetchall()
    return {row[0] for row in rows}


def _check_ratios(figures: dict[str, object], raw_key: str) -> None:
    assert figures["events_per_task"] == 5.0  # submitted, classified, routed, assigned, reserved
    assert isinstance(figures["tasks_per_s_median"], int) and figures["tasks_per_s_median"] > 0
    assert isinstance(figures[raw_key], int) and figures[raw_key] > 0
    ratios = figures["ratios"]
    assert isinstance(ratios, list) and len(ratios) == figures["repeats"]
    assert figures["ratio_median"] == sorted(ratios)[len(ratios) // 2]


def test_sqlite_figure_has_its_same_run_ratio(tmp_path: Path) -> None:
    figures = bench_submit_to_assigned(tmp_path, tasks=90, batch=30, repeats=3)
    _check_ratios(figures, "raw_sqlite_equivalent_tasks_per_s_median")
    # The diagnostic: the run's own rows inserted raw.
    assert figures["raw_sqlite_same_rows_tasks_per_s_median"] > 0
    assert figures["ratio_to_same_rows_median"] > 0
    # And the run's own events appended again, with no decision in front of them.
    assert figures["append_only_tasks_per_s_median"] > 0
    assert figures["append_only_ratio_median"] > 0


def test_the_append_only_figure_writes_the_very_rows_the_run_wrote(tmp_path: Path) -> None:
    runtime = fleet_on(Settings(store=f"sqlite:///{tmp_path / 'run.db'}"), agents=40)
    head = runtime.log.head()
    time_submissions(runtime, tasks=40, batch=10)
    codec = runtime.log.codec
    runtime.log.close()
    setup, timed = log_rows(tmp_path / "run.db", head)
    rate = append_only_rate(tmp_path / "again.db", codec, setup, timed, per_commit=50)
    assert rate > 0
    again_setup, again_timed = log_rows(tmp_path / "again.db", head)
    assert [tuple(r) for r in again_setup] == [tuple(r) for r in setup]
    assert [tuple(r) for r in again_timed] == [tuple(r) for r in timed]
    assert len(timed) == 40 * 5


def test_with_schema_sets_the_schema_and_refuses_other_stores() -> None:
    assert with_schema("postgresql://u@h:5432/db", "s1") == "postgresql://u@h:5432/db?schema=s1"
    assert (
        with_schema("postgresql://u@h/db?schema=old&sslmode=disable", "s2")
        == "postgresql://u@h/db?sslmode=disable&schema=s2"
    )
    with pytest.raises(ValidationError, match="postgresql://"):
        with_schema("sqlite:///x.db", "s")


@pytest.mark.postgres
def test_postgres_figure_beside_raw_psycopg_leaves_no_schema(pg_url: str) -> None:
    dsn = pg_url.split("?")[0]  # the fixture's server; the bench makes its own schemas
    before = _bench_schemas(dsn)
    figures = bench_submit_to_assigned_postgres(dsn, tasks=60, batch=20, repeats=1)
    _check_ratios(figures, "raw_psycopg_equivalent_tasks_per_s_median")
    assert _bench_schemas(dsn) <= before


@pytest.mark.postgres
def test_a_scratch_schema_is_dropped_when_the_work_fails(pg_url: str) -> None:
    dsn = pg_url.split("?")[0]
    with pytest.raises(RuntimeError, match="boom"), scratch_schema(dsn, "tierlog_bench") as name:
        assert name in _bench_schemas(dsn)
        raise RuntimeError("boom")
    assert name not in _bench_schemas(dsn)
