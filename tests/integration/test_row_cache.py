"""The runner's row cache on a real read store: each row a batch changes is written
once, counters are added in SQL without being read, and the tables do not depend on
how the log was cut into batches."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from wiring import runner_on

from tierlog.adapters.readside.read_store import ReadStore
from tierlog.adapters.readside.row_cache import ReadModelWriter, RowCache, add_sql
from tierlog.adapters.store.event_log import EventLog
from tierlog.adapters.tools.bench_runner import fold_from_store
from tierlog.projections.base import Table
from tierlog.projections.registry import all_projections

GOLDEN_LOG = Path(__file__).resolve().parent.parent / "fixtures" / "golden" / "demo-172s.db"
ITEMS = Table("t_items", (("k", "TEXT NOT NULL"), ("n", "BIGINT NOT NULL")), key=("k",))
COUNTS = Table(
    "t_counts",
    (("name", "TEXT NOT NULL"), ("label", "TEXT NOT NULL"), ("value", "BIGINT NOT NULL")),
    key=("name", "label"),
)


class Counting:
    """The real writer, with the rows each statement was given written down."""

    def __init__(self, db: ReadModelWriter) -> None:
        self.db = db
        self.written: list[tuple[str, int]] = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.db.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.written.append((sql.split()[0], len(rows)))
        self.db.executemany(sql, rows)

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        return self.db.fetchone(sql, params)


@pytest.fixture
def store(store_url: str) -> Any:
    log = EventLog(store_url)
    store = ReadStore(log)
    store.create([*ITEMS.ddl, *COUNTS.ddl])
    yield store
    store.close()
    log.close()


def test_a_row_changed_many_times_in_a_batch_is_written_once(store: ReadStore) -> None:
    with store.transaction() as db:
        counting = Counting(db)
        rows = RowCache([ITEMS, COUNTS], counting)
        rows.put(ITEMS, ["a", 0])
        for _ in range(100):
            row = rows.change(ITEMS, ("a",))
            assert row is not None
            row[1] += 1
            rows.add(COUNTS, ("events", ""), 2)
        assert rows.change(ITEMS, ("missing",)) is None
        assert rows.flush() == 2
    assert counting.written == [("INSERT", 1), ("INSERT", 1)]
    assert store.query("SELECT k, n FROM t_items") == [("a", 100)]
    assert store.query("SELECT name, label, value FROM t_counts") == [("events", "", 200)]


def test_counters_are_added_to_not_read(store: ReadStore) -> None:
    for batch in range(3):
        with store.transaction() as db:
            rows = RowCache([COUNTS], db)
            rows.add(COUNTS, ("events", ""), 5)
            rows.add(COUNTS, ("by", str(batch % 2)), 1)
            rows.flush()
    assert sorted(store.query("SELECT name, label, value FROM t_counts")) == [
        ("by", "0", 2),
        ("by", "1", 1),
        ("events", "", 15),
    ]


def test_a_row_put_and_deleted_in_one_batch_leaves_nothing(store: ReadStore) -> None:
    with store.transaction() as db:
        rows = RowCache([ITEMS], db)
        rows.put(ITEMS, ["gone", 1])
        rows.delete(ITEMS, ("gone",))
        assert rows.get(ITEMS, ("gone",)) is None
        rows.flush()
    assert store.query("SELECT COUNT(*) FROM t_items") == [(0,)]


def test_only_a_counter_table_can_be_added_to() -> None:
    with pytest.raises(ValueError, match="not a counter table"):
        add_sql(Table("t_wide", (("k", "TEXT"), ("a", "BIGINT"), ("b", "BIGINT")), key=("k",)))


def _tables(store: ReadStore) -> dict[str, list[tuple[Any, ...]]]:
    names = [t.name for p in all_projections() for t in p.tables]
    return {t: sorted(map(tuple, store.query(f"SELECT * FROM {t}")), key=repr) for t in names}


def test_the_read_models_do_not_depend_on_the_batch_size(tmp_path: Path) -> None:
    shutil.copyfile(GOLDEN_LOG, tmp_path / "demo.db")
    log = EventLog(f"sqlite:///{tmp_path / 'demo.db'}")
    found = []
    for batch in (10_000, 500, 37):
        store = ReadStore(log, sqlite_path=tmp_path / f"read-{batch}.db")
        runner = runner_on(log, store=store, projection_batch=batch)
        assert runner.run_until_caught_up() == log.head()
        found.append(_tables(store))
        store.close()
    log.close()
    assert found[0] == found[1] == found[2]
    assert found[0]["rm_tel_counters"] and found[0]["rm_queue"]


def test_the_fold_bench_folds_the_whole_log_into_new_read_models(tmp_path: Path) -> None:
    shutil.copyfile(GOLDEN_LOG, tmp_path / "demo.db")
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    folded, wall, cpu = fold_from_store(url, tmp_path / "read.db")
    log = EventLog(url)
    assert folded == log.head() and wall > 0 and cpu > 0
    store = ReadStore(log, sqlite_path=tmp_path / "read.db")
    assert store.positions() == {p.name: log.head() for p in all_projections()}
    store.close()
    log.close()
