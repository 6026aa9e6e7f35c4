"""``tierlog bench``'s read-side part: does the projection runner keep up with the writer?

One run commits group commits of ``batch`` submissions through the runtime, each commit
also completing the tasks the one before assigned (submit → routed → assigned →
completed, every read model touched), and times them: the writer's events/s. It keeps
what the writer hands over. Then two runners fold those same events into read
models of their own: one as ``serve``'s runner gets them, handed over in memory, the
other reading them from the store (another process, a restart). Each runner first
folds the fleet's setup untimed, so both time the same events. The ratio of a run is
the hand-over runner's rate over the writer's rate in that run; medians are reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from tierlog.adapters import bootstrap
from tierlog.adapters.readside.read_store import ReadStore
from tierlog.adapters.readside.runner import ProjectionRunner
from tierlog.adapters.runtime.writer import SchedulerRuntime
from tierlog.adapters.settings import Settings
from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import commands as cmd
from tierlog.domain.events import DomainEvent

Run = tuple[int, Sequence[tuple[int, DomainEvent]]]


def _keep(runs: list[Run], after: int, events: Sequence[tuple[int, DomainEvent]]) -> bool:
    """A hand-off that keeps every run (the bench offers them to a runner later)."""
    runs.append((after, events))
    return True


def _completions(runtime: SchedulerRuntime) -> list[cmd.Command]:
    """Every assigned task completes (its agent goes idle for the next one)."""
    return [
        cmd.CompleteTask(agent_id=a.agent_id, task_id=a.task_id, generation=a.generation)
        for a in runtime.state.agents.values()
        if a.status == "busy" and a.task_id is not None and a.generation is not None
    ]


def _runner(settings: Settings, log: EventLog, path: Path, upto: int) -> ProjectionRunner:
    """A runner with read models of its own at ``path``, folded up to ``upto``."""
    runner = bootstrap.build_runner(settings, log, store=ReadStore(log, sqlite_path=path))
    runner.start()
    runner.run_until_caught_up(upto)
    return runner


def _fold_rate(runner: ProjectionRunner, runs: list[Run], events: int) -> float:
    """Events/s of ``runner`` folding to the head, handed ``runs`` first (if any)."""
    if runs:
        handover = runner.accept_handover(events)
        for after, run in runs:
            handover.offer(after, run)
    read_before = runner.folded_from_store
    started = time.perf_counter()
    folded = runner.run_until_caught_up()
    elapsed = time.perf_counter() - started
    if folded != events:
        raise RuntimeError(f"bench: the runner folded {folded} of {events} events")
    if runs and runner.folded_from_store > read_before:
        raise RuntimeError("bench: the hand-over runner read the store")
    return events / elapsed


def bench_runner_vs_writer(
    workdir: Path,
    tasks: int,
    batch: int,
    repeats: int,
    *,
    fleet: Callable[[Path, int], SchedulerRuntime],
    specs: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """The writer's events/s on group commits of ``batch`` submissions (and the
    completions of the tasks the commit before assigned), and the runner's on the same
    events, handed over and from the store. ``fleet`` starts a runtime on a fresh
    SQLite log with that many idle agents (``bench``'s ``_fleet``); the submissions
    cycle through ``specs``."""
    writer: list[float] = []
    handed: list[float] = []
    stored: list[float] = []
    ratios: list[float] = []
    appended = 0
    for r in range(repeats):
        path = workdir / f"runner-{r}.db"
        runtime = fleet(path, 2 * batch)
        log = runtime.log
        setup = log.head()
        runs: list[Run] = []
        runtime.hand_off_to(partial(_keep, runs))
        started = time.perf_counter()
        for i in range(0, tasks, batch):
            # The tasks assigned by the last commit complete in this one, beside new ones.
            runtime.execute_batch(
                [
                    *_completions(runtime),
                    *(
                        cmd.SubmitTask(**specs[n % len(specs)])
                        for n in range(i, min(tasks, i + batch))
                    ),
                ]
            )
        runtime.execute_batch(_completions(runtime))
        elapsed = time.perf_counter() - started
        appended = log.head() - setup
        writer.append(appended / elapsed)
        settings = Settings(store=f"sqlite:///{path}")
        for rates, handover in ((handed, runs), (stored, [])):
            name = "handed" if handover else "stored"
            runner = _runner(settings, log, workdir / f"runner-{r}.{name}.db", setup)
            rates.append(_fold_rate(runner, handover, appended))
            runner.store.close()
        ratios.append(handed[-1] / writer[-1])
        log.close()
    return {
        "tasks": tasks,
        "batch": batch,
        "repeats": repeats,
        "events": appended,
        "writer_events_per_s_median": round(statistics.median(writer)),
        "runner_handover_events_per_s_median": round(statistics.median(handed)),
        "runner_store_events_per_s_median": round(statistics.median(stored)),
        "runner_to_writer_ratio": round(statistics.median(ratios), 3),
        "runner_store_to_writer_ratio": round(
            statistics.median(s / w for s, w in zip(stored, writer, strict=True)), 3
        ),
    }


def bench_runner_on_mix(workdir: Path, events: int, repeats: int) -> dict[str, Any]:
    """The same comparison on ``bench --audit``'s mix (every tier, outages that start
    and fire timers, failures and requeues; ``bench_audit.make_log``): the writer's
    events/s generating it, and the runner's on those events, handed over (decoded
    from the store beforehand, untimed: what the writer would have handed) and read
    from the store."""
    from tierlog.adapters.tools.bench_audit import make_log

    writer: list[float] = []
    handed: list[float] = []
    stored: list[float] = []
    head = 0
    for r in range(repeats):
        path = workdir / f"mix-{r}.db"
        started = time.perf_counter()
        head = make_log(f"sqlite:///{path}", events)
        writer.append(head / (time.perf_counter() - started))
        settings = Settings(store=f"sqlite:///{path}")
        log = bootstrap.open_log(settings)
        runs: list[Run] = [(0, log.read(0, head))]
        for rates, handover in ((handed, runs), (stored, [])):
            name = "handed" if handover else "stored"
            runner = _runner(settings, log, workdir / f"mix-{r}.{name}.db", 0)
            rates.append(_fold_rate(runner, handover, head))
            runner.store.close()
        runs.clear()
        log.close()
    return {
        "events": head,
        "repeats": repeats,
        "writer_events_per_s_median": round(statistics.median(writer)),
        "runner_handover_events_per_s_median": round(statistics.median(handed)),
        "runner_store_events_per_s_median": round(statistics.median(stored)),
        "runner_to_writer_ratio": round(
            statistics.median(h / w for h, w in zip(handed, writer, strict=True)), 3
        ),
    }


def fold_from_store(url: str, read_models: Path) -> tuple[int, float, float]:
    """Fold the whole log at ``url`` from the store into new read models at
    ``read_models`` (what ``tierlog project`` does on a log without them): events
    folded, wall seconds and CPU seconds."""
    log = EventLog(url)
    try:
        store = ReadStore(log, sqlite_path=read_models)
        runner = bootstrap.build_runner(Settings(store=url), log, store=store)
        runner.start()
        wall, cpu = time.perf_counter(), time.process_time()
        folded = runner.run_until_caught_up()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        runner.close()
    finally:
        log.close()
    return folded, wall, cpu
