"""The tests build runtimes and runners as ``tierlog serve`` does: through bootstrap."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from tierlog.adapters import bootstrap
from tierlog.adapters.readside.read_store import ReadStore
from tierlog.adapters.readside.runner import ProjectionRunner
from tierlog.adapters.runtime.ids import new_task_id as time_ordered_id
from tierlog.adapters.runtime.writer import SchedulerRuntime
from tierlog.adapters.settings import Settings
from tierlog.adapters.store.event_log import EventLog
from tierlog.domain.clock import Clock
from tierlog.domain.config import SchedulerConfig


def _log(log: EventLog | str) -> EventLog:
    return bootstrap.open_log(Settings(store=log)) if isinstance(log, str) else log


def runtime_on(
    log: EventLog | str,
    config: SchedulerConfig | None = None,
    clock: Clock | None = None,
    *,
    start: bool = True,
    new_task_id: Callable[[], UUID] = time_ordered_id,
    long_running: bool = False,
    **settings: Any,
) -> SchedulerRuntime:
    """A runtime over ``log`` (a log or a store URL), started unless ``start=False``;
    ``settings`` are ``Settings`` keys (``writer_poll_s=0.01``). A ``long_running`` one
    is ``serve``'s: settled records leave memory, checkpoints are kept."""
    runtime = bootstrap.build_runtime(
        Settings(scheduler=config or SchedulerConfig(), **settings),
        _log(log),
        clock=clock,
        new_task_id=new_task_id,
        long_running=long_running,
    )
    if start:
        runtime.start()
    return runtime


def runner_on(
    log: EventLog | str, *, store: ReadStore | None = None, start: bool = True, **settings: Any
) -> ProjectionRunner:
    """A projection runner over ``log`` (a log or a store URL), started unless told not."""
    runner = bootstrap.build_runner(Settings(**settings), _log(log), store=store)
    if start:
        runner.start()
    return runner
