"""The projection runner folds what the writer hands over, and the store whatever the
hand-over does not have: the read models come out the same as a rebuild from the log."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

import pytest
from command_strategies import BATCHES, CONFIG, run_batches
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wiring import runner_on, runtime_on

from tierlog.adapters import bootstrap
from tierlog.adapters.readside.read_store import ReadStore
from tierlog.adapters.readside.runner import ProjectionRunner
from tierlog.adapters.runtime.writer import SchedulerRuntime
from tierlog.adapters.settings import Settings
from tierlog.adapters.store.event_log import EventLog
from tierlog.adapters.tools.demo import POLICY, FleetSimulator, _task_spec, run_demo
from tierlog.domain import commands as cmd
from tierlog.domain.clock import VirtualClock
from tierlog.projections.base import Handler, Rows
from tierlog.projections.registry import all_projections
from tierlog.projections.telemetry import VERSION, TelemetryProjection


def _dump(store: ReadStore) -> dict[str, list[tuple[object, ...]]]:
    tables = [t.name for p in all_projections() for t in p.tables]
    return {t: sorted(map(tuple, store.query(f"SELECT * FROM {t}")), key=repr) for t in tables}


def _wired(runtime: SchedulerRuntime, runner: ProjectionRunner, capacity: int) -> None:
    # As bootstrap.build_system wires serve.
    runtime.hand_off_to(runner.accept_handover(capacity).offer)


def _rebuilt_equals_live(runner: ProjectionRunner) -> None:
    live = _dump(runner.store)
    runner.handover = None  # the rebuild reads the store alone
    runner.rebuild()
    assert _dump(runner.store) == live


@pytest.mark.parametrize("capacity", [100_000, 40])
def test_the_demo_folded_from_the_handover_equals_a_rebuild(new_store, capacity):
    url = new_store()
    clock = VirtualClock()
    runtime = runtime_on(url, POLICY, clock, start=False)
    runner = runner_on(url)
    _wired(runtime, runner, capacity)
    runtime.start()
    rng = random.Random(3)
    sim = FleetSimulator(runtime, clock, rng)
    sim.setup()
    submitted = 0
    while sim.elapsed < 300:
        count = rng.choice((0, 1, 2, 3))
        sim.step(0.5, [_task_spec(rng, submitted + i) for i in range(count)])
        submitted += count
        if rng.random() < 0.3:  # the runner runs now and then, as its thread would
            runner.run_until_caught_up()
    runner.run_until_caught_up()
    head = runtime.log.head()
    assert runner.position() == head
    assert runner.folded_from_handover + runner.folded_from_store == head
    assert runner.folded_from_handover > head // 2
    if capacity == 40:  # the hand-over filled up now and then: the store made up for it
        assert runner.handover is not None and runner.handover.stats.refused > 0
        assert runner.folded_from_store > 0
    _rebuilt_equals_live(runner)
    runner.close()
    runtime.log.close()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    batches=BATCHES,
    capacity=st.integers(min_value=1, max_value=30),
    fold_after=st.lists(st.booleans(), min_size=1, max_size=30),
    batch=st.integers(min_value=1, max_value=12),
)
def test_any_commands_folded_from_the_handover_equal_a_rebuild(
    tmp_path_factory, batches, capacity, fold_after, batch
):
    url = f"sqlite:///{tmp_path_factory.mktemp('handover') / 'log.db'}"
    clock = VirtualClock()
    runtime = runtime_on(url, CONFIG, clock, start=False)
    runner = runner_on(url, projection_batch=batch)
    _wired(runtime, runner, capacity)
    runtime.start()
    for n, one in enumerate(batches):
        run_batches(runtime, clock, [one])
        if fold_after[n % len(fold_after)]:
            runner.run_once()
    runner.run_until_caught_up()
    assert runner.position() == runtime.log.head()
    _rebuilt_equals_live(runner)
    runner.close()
    runtime.log.close()


def test_serve_folds_from_the_handover_and_catches_up_after_a_restart(tmp_path):
    # The runner reads the store when it is woken or polls; a slow poll leaves the
    # wake-ups (which come after each hand-over) as the only reason to read, so the
    # share below does not depend on how loaded the machine is.
    settings = Settings(
        store=f"sqlite:///{tmp_path / 'log.db'}", writer_poll_s=0.01, projection_poll_s=30
    )
    system = bootstrap.build_system(settings)
    system.start_background()
    try:
        at_start = system.runner.folded_from_store
        system.runtime.call(cmd.RegisterAgent(agent_id="a1", capabilities=("python",)))
        for i in range(20):
            system.runtime.call(cmd.SubmitTask(description=f"task {i}"))
        _wait_caught_up(system.runner)
        # What was committed after the start came from the writer's hand (the store only
        # when a poll happened to fall between a commit and its hand-over).
        since = system.log.head() - at_start
        assert system.runner.folded_from_handover >= 0.8 * since > 20
        assert system.runner.folded_from_handover + system.runner.folded_from_store == (
            system.log.head()
        )
    finally:
        system.close()
    # Another process appends while serve is down. The next start's runtime reads them
    # as it catches up and hands them over; a runner behind that reads the store.
    other = runtime_on(settings.store)
    for i in range(5):
        other.execute(cmd.SubmitTask(description=f"while down {i}"))
    other.log.close()
    behind = bootstrap.build_runner(settings, bootstrap.open_log(settings))
    behind.start()
    folded = behind.position()
    behind.close()
    behind.log.close()
    system = bootstrap.build_system(settings)
    system.start()
    try:
        runner = system.runner
        assert runner.position() == system.log.head()
        assert runner.folded_from_store + runner.folded_from_handover == runner.position() - folded
        _rebuilt_equals_live(runner)
    finally:
        system.close()


def test_a_batch_another_runner_folded_first_is_not_folded_again(new_store):
    url = new_store()
    runtime = runtime_on(url, CONFIG, VirtualClock(), start=False)
    mine = runner_on(url)
    _wired(runtime, mine, 10_000)
    runtime.start()
    for i in range(10):
        runtime.execute(cmd.SubmitTask(description=f"task {i}"))
    assert mine.handover is not None and len(mine.handover) > 20
    # Another node's runner (or ``tierlog project``) folds them first, from the store.
    other = runner_on(url)
    assert other.run_until_caught_up() == runtime.log.head()
    assert mine.run_until_caught_up() == 0
    assert mine.folded_from_handover == 0 and len(mine.handover) == 0
    assert mine.position() == runtime.log.head()
    _rebuilt_equals_live(mine)
    for runner in (mine, other):
        runner.close()
    runtime.log.close()


def _wait_caught_up(runner: ProjectionRunner, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while runner.position() < runner.log.head():
        assert time.monotonic() < deadline, "the runner did not catch up"
        time.sleep(0.02)


def test_runners_taking_turns_in_small_batches_fold_what_a_rebuild_does(new_store):
    # Each keeps the rows it committed for its next batch: they must be forgotten
    # whenever the other one wrote in between.
    url = new_store()
    run_demo(url, tasks=120, seed=4)
    first, second = runner_on(url, projection_batch=7), runner_on(url, projection_batch=11)
    first.rebuild(stop=0)
    turn = 0
    while first.run_once() + second.run_once():
        turn += 1
    assert turn > 10 and first.position() == first.log.head()
    _rebuilt_equals_live(first)
    for runner in (first, second):
        runner.close()


class _FailsOnce:
    """The telemetry read model, failing once when it reaches ``position``."""

    def __init__(self, position: int) -> None:
        self.inner = TelemetryProjection()
        self.name, self.tables, self.version = self.inner.name, self.inner.tables, VERSION
        self.position = position

    def handlers_for(self, event_type: type) -> Sequence[Handler]:
        return (*self.inner.handlers_for(event_type), self._maybe_fail)

    def _maybe_fail(self, rows: Rows, position: int, event: object) -> None:
        if position == self.position:
            self.position = -1
            raise RuntimeError("a fault in the middle of a batch")


def test_a_batch_that_failed_leaves_no_kept_row_behind(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    run_demo(url, tasks=60, seed=2)
    failing = _FailsOnce(position=150)
    store = ReadStore(EventLog(url), sqlite_path=tmp_path / "failing.read.db")
    runner = runner_on(url, store=store, projection_batch=100, start=False)
    runner.projections = [failing]
    runner.start()
    runner.run_once()  # 1..100: its rows are kept
    with pytest.raises(RuntimeError, match="a fault"):
        runner.run_once()  # 101..200 changed kept rows (counters), then rolled back
    runner.run_until_caught_up()
    reference = runner_on(url)  # the demo's read models, folded without a fault
    counters = "SELECT name, label, value FROM rm_tel_counters ORDER BY name, label"
    assert runner.store.query(counters) == reference.store.query(counters)
    for one in (runner, reference):
        one.close()


def test_a_first_start_beside_checkpoints_reads_the_store_up_to_them(tmp_path):
    settings = Settings(store=f"sqlite:///{tmp_path / 'log.db'}")
    system = bootstrap.build_system(settings)
    system.start()
    for i in range(30):
        system.runtime.execute(cmd.SubmitTask(description=f"task {i}"))
    system.close()  # a checkpoint at the head is written as it stops
    for leftover in tmp_path.glob("log.read.db*"):
        leftover.unlink()  # the read models are gone: a first start for them
    system = bootstrap.build_system(settings)
    system.start()
    try:
        runner = system.runner
        assert runner.position() == system.log.head()
        assert runner.folded_from_store >= 60  # up to the checkpoint the runtime took
        _rebuilt_equals_live(runner)
    finally:
        system.close()
