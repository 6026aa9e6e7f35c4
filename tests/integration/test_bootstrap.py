"""The composition root, and constructors that do no I/O: catching up, recording the
configuration, firing overdue timers and refolding read models wait for ``start()``."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest
from wiring import runner_on, runtime_on

from tierlog.adapters import bootstrap
from tierlog.adapters.settings import Settings
from tierlog.adapters.store.event_log import EventLog
from tierlog.adapters.store.lineage import ReplacedLogError
from tierlog.domain import commands as cmd
from tierlog.domain import events as ev
from tierlog.domain.clock import VirtualClock
from tierlog.domain.config import SchedulerConfig

CONFIG = SchedulerConfig(fallback_wait_s=5.0)
NEW_POLICY = SchedulerConfig(fallback_wait_s=5.0, lease_s=120.0)


class WatchedLog(EventLog):
    """A real log that counts reads and appends."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.reads = 0
        self.appends = 0

    def read(
        self, after: int = 0, limit: int = 1000, stop: int | None = None
    ) -> list[tuple[int, ev.DomainEvent]]:
        self.reads += 1
        return super().read(after, limit, stop)

    def append(self, events: Sequence[ev.DomainEvent]) -> list[int]:
        self.appends += 1
        return super().append(events)


def _count(log: EventLog, event_type: type) -> int:
    return sum(1 for _, e in log.iter_events() if isinstance(e, event_type))


def _overdue_timer(url: str, clock: VirtualClock) -> None:
    """A log whose one fallback timer is an hour overdue."""
    runtime = runtime_on(url, CONFIG, clock)
    runtime.execute(cmd.RegisterAgent(agent_id="a1"))
    runtime.execute(cmd.SubmitTask(description="write tests for the parser"))
    assert runtime.state.timers
    runtime.log.close()
    clock.advance(3600)


def test_a_constructed_runtime_has_not_touched_the_log(store_url):
    clock = VirtualClock()
    _overdue_timer(store_url, clock)
    log = WatchedLog(store_url)
    head = log.head()
    runtime = bootstrap.build_runtime(Settings(scheduler=NEW_POLICY), log, clock=clock)
    assert (log.reads, log.appends) == (0, 0)
    assert runtime.state.position == 0 and not runtime.started
    with pytest.raises(RuntimeError, match="start"):
        runtime.execute(cmd.RegisterAgent(agent_id="a2"))
    with pytest.raises(RuntimeError, match="start"):
        runtime.tick()
    assert log.head() == head and log.appends == 0
    assert _count(log, ev.FallbackTimerFired) == 0

    runtime.start()  # catches up, records the configuration, fires the overdue timer
    assert runtime.started and log.reads > 0
    assert _count(log, ev.FallbackTimerFired) == 1
    assert _count(log, ev.SchedulerConfigured) == 2  # the first runtime's, then the new one
    runtime.start()  # only once
    assert _count(log, ev.SchedulerConfigured) == 2
    log.close()


def test_the_background_writer_starts_the_runtime_first(sqlite_url):
    clock = VirtualClock()
    _overdue_timer(sqlite_url, clock)
    runtime = runtime_on(sqlite_url, CONFIG, clock, start=False, writer_poll_s=0.01)
    with pytest.raises(RuntimeError, match="not running"):
        runtime.submit(cmd.RunSchedulingPass())
    runtime.start_background()
    try:
        assert runtime.started and runtime.running
        assert _count(runtime.log, ev.FallbackTimerFired) == 1
        assert runtime.call(cmd.RegisterAgent(agent_id="a2")) is None
    finally:
        runtime.stop()
        runtime.log.close()


def _read_rows(read_db: Path) -> list[str]:
    with sqlite3.connect(read_db) as conn:
        return [row[0] for row in conn.execute("SELECT description FROM rm_tasks ORDER BY 1")]


def _fill(url: str, word: str, n: int) -> None:
    runtime = runtime_on(url, CONFIG, VirtualClock())
    runtime.execute_batch([cmd.SubmitTask(description=f"{word} {i}") for i in range(n)])
    runtime.log.close()


def test_a_constructed_runner_has_not_touched_the_read_store(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'tierlog.db'}"
    _fill(url, "old", 3)
    runner = runner_on(url)
    runner.run_until_caught_up()
    runner.close()
    runner.log.close()
    for leftover in tmp_path.glob("tierlog.db*"):
        leftover.unlink()  # a new log under the old read models
    _fill(url, "new", 2)
    read_db = tmp_path / "tierlog.read.db"
    before = _read_rows(read_db)
    assert before == ["old 0", "old 1", "old 2"]

    runner = runner_on(url, start=False)
    assert _read_rows(read_db) == before  # not refolded by the constructor
    with pytest.raises(RuntimeError, match="start"):
        runner.run_once()
    with pytest.raises(RuntimeError, match="start"):
        runner.rebuild()
    assert _read_rows(read_db) == before

    with pytest.raises(ReplacedLogError):
        runner.start()  # finds the read models were built from another log: refuses
    assert _read_rows(read_db) == before
    runner.close()
    runner.log.close()


def test_a_system_is_built_idle_and_started_in_order(store_url):
    settings = Settings(store=store_url, writer_poll_s=0.01, projection_poll_s=0.01)
    system = bootstrap.build_system(settings, clock=VirtualClock())
    try:
        assert system.log.head() == 0 and system.prober is None
        assert not system.runtime.started
        system.start()
        head = system.log.head()
        assert _count(system.log, ev.SchedulerConfigured) == 1
        assert system.runner.position() == head  # the read models are caught up
        system.start_background()
        assert system.runtime.running
        system.runtime.call(cmd.RegisterAgent(agent_id="a1"))
    finally:
        system.close()
    assert not system.runtime.running


def test_the_prober_is_built_and_run_only_when_asked(sqlite_url):
    settings = Settings(store=sqlite_url, probe=True, probe_interval_s=0.05)
    system = bootstrap.build_system(settings)
    try:
        assert system.prober is not None and not system.prober.running
        system.start_background()
        assert system.prober.running
    finally:
        system.close()
    assert not system.prober.running


def test_the_admin_token_comes_from_the_settings_or_is_kept_beside_the_log(tmp_path):
    url = f"sqlite:///{tmp_path / 'tierlog.db'}"
    log = bootstrap.open_log(Settings(store=url))
    try:
        assert bootstrap.admin_token(Settings(store=url, admin_token="given"), log) == (
            "given",
            False,
        )
        assert not (tmp_path / "tierlog.admin-token").exists()
        token, generated = bootstrap.admin_token(Settings(store=url), log)
        assert generated and (tmp_path / "tierlog.admin-token").read_text().strip() == token
        assert bootstrap.admin_token(Settings(store=url), log) == (token, False)
    finally:
        log.close()
