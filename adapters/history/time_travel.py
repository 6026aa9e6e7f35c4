"""Time travel through a log: the state at a position or time, the difference between
two points, and a task's story. All stream the log; none changes it."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import events as ev
from tierlog.domain.aggregates.task import TaskRecord
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.state import SchedulerState


def position_at_time(log: EventLog, when: datetime) -> int:
    """The position of the last event stamped at or before ``when`` (0 if none)."""
    position = 0
    for pos, event in log.iter_events():
        if event.timestamp > when:
            break
        position = pos
    return position


def fold_until(log: EventLog, position: int) -> SchedulerState:
    """The scheduler's state after the events at positions ``1..position`` (from the
    nearest checkpoint, see ``adapters.history.checkpoints``)."""
    from tierlog.adapters.history.checkpoints import state_at

    return state_at(log, position)


def summarise_state(state: SchedulerState) -> dict[str, Any]:
    """The queue, pending timers, agents, endpoints and counters of a state (counting
    the tasks a time-travel state dropped when they finished)."""
    by_state: Counter[str] = Counter(t.state for t in state.tasks.values())
    by_tier: Counter[str] = Counter(t.effective_tier for t in state.tasks.values())
    for (finished, tier), count in state.finished_counts.items():
        by_state[finished] += count
        by_tier[tier] += count
    return {
        "position": state.position,
        "queue": [
            {
                "task_id": str(t.task_id),
                "priority": t.priority,
                "tier": t.effective_tier,
                "generation": t.generation,
            }
            for t in state.queued_tasks()
        ],
        "timers": [msgspec.to_builtins(t) for t in state.timers.values()],
        "agents": [msgspec.to_builtins(a) for a in state.agents.values()],
        "endpoints": [msgspec.to_builtins(e) for e in state.endpoints.values()],
        "counters": {"tasks_by_state": dict(by_state), "tasks_by_tier": dict(by_tier)},
    }


def task_record_at(log: EventLog, state: SchedulerState, task_id: UUID) -> TaskRecord | None:
    """One task as it was at the state's position, or None if it did not exist yet: from
    the state, or (a finished task the state dropped) folded from the task's own events."""
    task = state.tasks.get(task_id)
    if task is not None or state.keep_finished:
        return task
    alone = SchedulerState()
    for position, event in log.positioned_events_of(task_id):
        if position > state.position:
            break
        alone.apply(event, position)
    return alone.tasks.get(task_id)


def task_at(log: EventLog, state: SchedulerState, task_id: UUID) -> dict[str, Any] | None:
    """One task as it was, as plain data (see ``task_record_at``)."""
    task = task_record_at(log, state, task_id)
    return None if task is None else msgspec.to_builtins(task)


_FINISHED_STATES = {ev.TaskCompleted: "completed", ev.TaskCancelled: "cancelled"}
# The events of task streams (their originator is the task).
_TASK_EVENTS = (
    ev.TaskSubmitted,
    ev.TaskClassified,
    ev.TaskRouted,
    ev.TaskAssigned,
    ev.TaskHeartbeated,
    ev.TaskCompleted,
    ev.TaskFailed,
    ev.TaskReclaimed,
    ev.TaskEscalated,
    ev.TaskRequeued,
    ev.TaskDeadLettered,
    ev.TaskRetried,
    ev.TaskCancelled,
    ev.TaskDeescalated,
)


def diff(log: EventLog, a: int, b: int) -> dict[str, Any]:
    """What changed between positions ``a`` and ``b`` (``a < b``): streams the events
    between them, so memory follows the range, not the log."""
    if a > b:
        a, b = b, a
    before = fold_until(log, a)
    after = fold_until(log, b)
    touched: dict[UUID, None] = {}  # task ids in order of first change
    finished: dict[UUID, str] = {}
    timers: Counter[str] = Counter()
    endpoints: list[dict[str, Any]] = []
    for _, event in log.iter_events(after=a, stop=b):
        if isinstance(event, _TASK_EVENTS):
            touched[event.originator_id] = None
            if type(event) in _FINISHED_STATES:
                finished[event.originator_id] = _FINISHED_STATES[type(event)]
        match event:
            case ev.FallbackTimerStarted():
                timers["started"] += 1
            case ev.FallbackTimerFired():
                timers["fired"] += 1
            case ev.FallbackTimerCancelled():
                timers[f"cancelled:{event.reason}"] += 1
            case ev.EndpointRegistered() | ev.EndpointHealthReported() | ev.EndpointDeregistered():
                endpoints.append(
                    {
                        "endpoint_id": event.endpoint_id,
                        "change": type(event).__name__,
                        "status": getattr(event, "status", None),
                    }
                )
            case _:
                pass
    changed = []
    for task_id in touched:
        was = before.tasks.get(task_id)
        now = after.tasks.get(task_id)
        to = now.state if now is not None else finished.get(task_id)
        if was is None or was.state != to:
            changed.append(
                {"task_id": str(task_id), "from": None if was is None else was.state, "to": to}
            )
    counts_before = summarise_state(before)["counters"]["tasks_by_state"]
    counts_after = summarise_state(after)["counters"]["tasks_by_state"]
    return {
        "from": a,
        "to": b,
        "tasks_changed": changed,
        "timers": dict(timers),
        "endpoint_changes": endpoints,
        "counter_deltas": {
            k: counts_after.get(k, 0) - counts_before.get(k, 0)
            for k in sorted(set(counts_before) | set(counts_after))
        },
    }


def _scheduler_events(
    log: EventLog, task_id: UUID
) -> tuple[list[tuple[int, ev.DomainEvent]], list[tuple[int, ev.SchedulerLeaderElected]]]:
    """The task's timer events, and every leader election (several nodes on PostgreSQL),
    from the Scheduler stream."""
    timers: list[tuple[int, ev.DomainEvent]] = []
    elections: list[tuple[int, ev.SchedulerLeaderElected]] = []
    for position, event in log.positioned_events_of(ev.SCHEDULER_ID):
        if isinstance(event, ev.SchedulerLeaderElected):
            elections.append((position, event))
        elif getattr(event, "task_id", None) == task_id:
            timers.append((position, event))
    return timers, elections


def _decided_by(
    elections: list[tuple[int, ev.SchedulerLeaderElected]], position: int
) -> str | None:
    """The leader whose decision the event at ``position`` is (None before any election)."""
    at = bisect.bisect_left(elections, position, key=lambda pair: pair[0])
    if at == 0:
        return None
    elected = elections[at - 1][1]
    return f"{elected.node_id} (epoch {elected.epoch})"


def explain(log: EventLog, task_id: UUID) -> list[dict[str, Any]]:
    """The task's story: each event with its time, every routing decision with its
    reason, candidates and scores, its timers, why it waited when it waited, and (on a
    log several nodes wrote) which elected leader decided each event."""
    own = log.positioned_events_of(task_id)
    if not own:
        return []
    timers, elections = _scheduler_events(log, task_id)
    story = sorted([*own, *timers], key=lambda pair: pair[0])
    lines: list[dict[str, Any]] = []
    queued_since: datetime | None = None
    for position, event in story:
        line: dict[str, Any] = {
            "position": position,
            "at": event.timestamp.isoformat(),
            "event": type(event).__name__,
        }
        decided_by = _decided_by(elections, position)
        if decided_by is not None:
            line["decided_by"] = decided_by
        match event:
            case ev.TaskSubmitted():
                line["detail"] = f"submitted by {event.submitted_by}: {event.description!r}"
                queued_since = event.timestamp
            case ev.TaskClassified():
                line["detail"] = event.reason
            case ev.TaskRouted() | ev.TaskAssigned():
                d = event.decision
                line["detail"] = (
                    f"{d.effective_tier} -> {d.target_type}"
                    + (
                        f" {d.selected_endpoint} ({d.selected_model})"
                        if d.selected_endpoint
                        else ""
                    )
                    + (
                        f"; fallback from {d.fallback_from_tier}: {d.fallback_reason}"
                        if d.fallback_used
                        else ""
                    )
                    + f"; {d.classification_reason}"
                )
                line["candidates"] = [msgspec.to_builtins(c) for c in d.candidates]
                if isinstance(event, ev.TaskAssigned) and queued_since is not None:
                    waited = (event.timestamp - queued_since).total_seconds()
                    line["waited_s"] = waited
                    line["detail"] += f"; to {event.agent_id} after waiting {waited:g} s"
            case ev.FallbackTimerStarted():
                line["detail"] = (
                    f"waiting: no candidate at {event.original_tier} "
                    f"({event.reason}); falls back to {event.fallback_tier} at "
                    f"{event.fires_at.isoformat()}"
                )
            case ev.FallbackTimerFired():
                line["detail"] = f"escalated to {event.fallback_tier} after {event.wait_ms} ms"
            case ev.FallbackTimerCancelled():
                line["detail"] = f"timer cancelled: {event.reason}"
            case ev.TaskRequeued() | ev.TaskRetried():
                queued_since = event.timestamp
                line["detail"] = f"back in the queue as generation {event.generation}"
                if isinstance(event, ev.TaskRequeued) and event.not_before is not None:
                    line["detail"] += f", not before {event.not_before.isoformat()}"
            case _:
                payload = msgspec.to_builtins(event)
                for key in ("originator_id", "originator_version", "timestamp"):
                    payload.pop(key, None)
                line["detail"] = payload
        lines.append(line)
    return lines


def what_if(
    log: EventLog,
    config: Any,
    start: int = 0,
    stop: int | None = None,
    overlay: Callable[[SchedulerConfig], SchedulerConfig] | None = None,
) -> dict[str, Any]:
    """Replay the log under ``config``: tasks submitted in ``(start, stop]`` whose tier,
    target, endpoint, model, cost tier or timer outcome would change, with counts.

    With an ``overlay``, ``config`` holds only until the log's first recorded
    configuration; from each ``SchedulerConfigured`` on, the replay runs under the
    overlay of the configuration it records.
    """
    from tierlog.domain.replay.whatif import WhatIf

    replay = WhatIf(config, report_from=start, overlay=overlay)
    for position, event in log.iter_events(stop=stop):
        replay.feed(position, event)
    report = replay.report()
    return {
        "tasks_considered": report.tasks_seen,
        "tasks_changed": len(report.changes),
        "counts": dict(sorted(report.counts.items())),
        "changes": report.changes,
    }
