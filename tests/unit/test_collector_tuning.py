"""The scheduler process's garbage-collector thresholds (issue #17)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from tierlog.adapters import bootstrap
from tierlog.adapters.runtime.process_memory import GC_THRESHOLDS, tune_collector
from tierlog.adapters.settings import Settings


@pytest.fixture(autouse=True)
def _restore_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_the_thresholds_are_raised_from_pythons_defaults() -> None:
    gc.set_threshold(700, 10, 10)
    assert tune_collector() == GC_THRESHOLDS == gc.get_threshold()


def test_higher_thresholds_a_process_chose_are_kept() -> None:
    gc.set_threshold(100_000, 5, 50)
    assert tune_collector() == (100_000, 20, 50)


def test_a_collector_turned_off_stays_off() -> None:
    gc.set_threshold(0, 10, 10)
    assert tune_collector() == (0, 10, 10)


def test_building_a_runtime_tunes_the_collector(tmp_path: Path) -> None:
    gc.set_threshold(700, 10, 10)
    settings = Settings(store=f"sqlite:///{tmp_path / 'log.db'}")
    log = bootstrap.open_log(settings)
    try:
        bootstrap.build_runtime(settings, log)
    finally:
        log.close()
    assert gc.get_threshold() == GC_THRESHOLDS
