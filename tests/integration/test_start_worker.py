"""Read models far behind the log are folded by a worker process while ``serve``'s
runtime folds its state: the read models come out as a rebuild from the log, and a
worker that dies part-way loses only time."""

from __future__ import annotations

import logging
import time

import pytest

from tierlog.adapters import bootstrap
from tierlog.adapters.readside.catch_up_worker import (
    read_models_folded_aside,
    usable_cores,
    worth_a_worker,
)
from tierlog.adapters.readside.read_store import ReadStore
from tierlog.adapters.readside.runner import ProjectionRunner
from tierlog.adapters.settings import START_FOLD_BATCH, Settings
from tierlog.adapters.tools.bench_audit import make_log
from tierlog.projections.registry import all_projections


def _dump(store: ReadStore) -> dict[str, list[tuple[object, ...]]]:
    tables = [t.name for p in all_projections() for t in p.tables]
    return {t: sorted(map(tuple, store.query(f"SELECT * FROM {t}")), key=repr) for t in tables}


def _rebuilt_equals_live(runner: ProjectionRunner) -> None:
    live = _dump(runner.store)
    runner.handover = None  # the rebuild reads the store alone
    runner.rebuild()
    assert _dump(runner.store) == live


def test_a_worker_only_when_far_behind_and_a_second_core_is_there():
    assert not worth_a_worker(Settings(projection_worker_start_events=0), 10**9)
    assert not worth_a_worker(Settings(projection_worker_start_events=1000), 999)
    assert worth_a_worker(Settings(projection_worker_start_events=1000), 1000) == (
        usable_cores() >= 2
    )


@pytest.mark.skipif(usable_cores() < 2, reason="one core: serve starts without a worker")
def test_a_first_start_far_behind_folds_the_read_models_in_a_worker(store_url):
    head = make_log(store_url, 3000, agents=50)
    settings = Settings(store=store_url, projection_worker_start_events=1000)
    system = bootstrap.build_system(settings)
    try:
        system.start()
        assert system.start_worker_exit == 0
        assert system.runner.position() == system.log.head()
        # Here only what the runtime's first pass appended after the worker's stop.
        here = system.runner.folded_from_store + system.runner.folded_from_handover
        assert here == system.log.head() - head
        _rebuilt_equals_live(system.runner)
    finally:
        system.close()


def test_a_start_close_to_the_log_folds_in_step_without_a_worker(store_url):
    make_log(store_url, 3000, agents=50)
    system = bootstrap.build_system(Settings(store=store_url))  # 100,000 by default
    try:
        system.start()
        assert system.start_worker_exit is None
        assert system.runner.position() == system.log.head()
    finally:
        system.close()


def test_a_worker_killed_part_way_loses_only_time(sqlite_url, caplog):
    # Three of the worker's transactions; it is killed once the first has committed.
    head = make_log(sqlite_url, 2 * START_FOLD_BATCH + 5000, agents=200)
    settings = Settings(store=sqlite_url)
    runner = bootstrap.build_runner(settings, bootstrap.open_log(settings))
    runner.start()
    with (
        caplog.at_level(logging.WARNING),
        read_models_folded_aside(settings, head) as worker,
    ):
        deadline = time.monotonic() + 60
        while runner.position() == 0 and worker.poll() is None:
            assert time.monotonic() < deadline, "the worker committed nothing in 60 s"
            time.sleep(0.01)
        worker.kill()
    assert 0 < runner.position() < head, "killed before its last transaction"
    assert "exit code -9" in caplog.text
    runner.run_until_caught_up()
    assert runner.position() == head
    _rebuilt_equals_live(runner)
    runner.close()
    runner.log.close()


def test_a_worker_that_cannot_open_the_store_is_said_and_the_caller_folds(tmp_path, caplog):
    (tmp_path / "a-file").write_text("not a folder")
    missing = f"sqlite:///{tmp_path / 'a-file' / 'log.db'}"
    with (
        caplog.at_level(logging.WARNING),
        read_models_folded_aside(Settings(store=missing), 10) as worker,
    ):
        pass
    assert worker.returncode not in (0, None)
    assert "the read models catch up here" in caplog.text


def test_leaving_the_block_by_an_error_stops_the_worker(sqlite_url):
    head = make_log(sqlite_url, 2 * START_FOLD_BATCH, agents=200)
    with (
        pytest.raises(KeyboardInterrupt),
        read_models_folded_aside(Settings(store=sqlite_url), head) as worker,
    ):
        raise KeyboardInterrupt
    assert worker.returncode is not None
