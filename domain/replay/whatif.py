"""What-if: replay recorded traffic under another configuration and say, task by task,
what the routing policy and the fallback timers would have done differently.

The recorded inputs stay as they were: submissions, endpoint state over time, and when
each task waited. What is recomputed under the new configuration: whether a fallback
timer starts, whether it fires (its wait against when the tier recovered), and the
routing decision (tier, target, endpoint, model, cost tier) at the recorded moment.

The new configuration is either one whole configuration for the entire log, or an
``overlay``: a function of the recorded configuration, applied again at each
``SchedulerConfigured`` the log holds, so the keys it does not change follow what was
recorded at each moment.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from msgspec.structs import replace

from tierlog.domain import events as ev
from tierlog.domain.aggregates.endpoint import EndpointRecord
from tierlog.domain.aggregates.task import TaskRecord
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.routing import decide_route, has_candidate
from tierlog.domain.state import SchedulerState

FIELDS = ("tier", "target", "endpoint", "model", "cost_tier", "timer")
_FINISHED = (ev.TaskCompleted, ev.TaskCancelled)


@dataclass
class _Timer:
    tier: str
    deadline: datetime | None  # None: no timer would start under the new configuration
    outcome: str = "pending"
    # The endpoints as they were when the tier recovered and ended the wait (if it did).
    recovered_with: tuple[EndpointRecord, ...] | None = None


@dataclass
class TaskOutcome:
    """What happened to one task (recorded) or would have (under the new config)."""

    tier: str | None = None
    target: str | None = None
    endpoint: str | None = None
    model: str | None = None
    cost_tier: str | None = None
    timer: str = "none"


@dataclass
class WhatIfReport:
    """Every task whose outcome would change, and counts per kind of change."""

    tasks_seen: int = 0
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        return {
            "tasks_seen": self.tasks_seen,
            "tasks_changed": len(self.changes),
            "counts": dict(sorted(self.counts.items())),
            "changes": self.changes,
        }


class WhatIf:
    """Folds a recorded log and, alongside, what the new configuration would do.

    Memory follows the live tasks: a task is compared and forgotten once it has
    finished (completed or cancelled) and its virtual timer, if any, is decided; its
    change, if any, goes into the report. Tasks submitted at or before ``report_from``
    are folded but not reported.
    """

    def __init__(
        self,
        new: SchedulerConfig,
        report_from: int = 0,
        overlay: Callable[[SchedulerConfig], SchedulerConfig] | None = None,
    ) -> None:
        self.new = new
        # With an overlay, each recorded configuration is replaced by the overlay of it.
        self.overlay = overlay
        self.report_from = report_from
        self.state = SchedulerState(keep_finished=False)
        self.result = WhatIfReport()
        self.recorded: dict[UUID, TaskOutcome] = {}
        self.in_range: set[UUID] = set()
        self.virtual: dict[UUID, _Timer] = {}
        self.pending: dict[UUID, _Timer] = {}
        self._due: list[tuple[datetime, int, UUID]] = []  # pending timers by deadline
        self._pushed = 0
        # Each routed task's decision and the endpoints it was made with.
        self.decisions: dict[UUID, tuple[ev.TaskRouted, tuple[EndpointRecord, ...]]] = {}
        # Tasks the log finished whose virtual timer is still pending.
        self.finished: dict[UUID, TaskRecord] = {}
        self._endpoints_now: tuple[EndpointRecord, ...] = ()
        # Recent endpoint states by position, for a decision citing one that has since
        # changed (another writer's endpoint event landed between); bounded.
        self._endpoints_at: deque[tuple[int, tuple[EndpointRecord, ...]]] = deque(maxlen=1024)

    def feed(self, position: int, event: ev.DomainEvent) -> None:
        """Fold one recorded event."""
        self._expire(event.timestamp)
        if self.overlay is not None and isinstance(event, ev.SchedulerConfigured):
            self.new = self.overlay(event.config)
        ending = self.state.tasks.get(event.originator_id) if type(event) in _FINISHED else None
        self.state.apply(event, position)
        match event:
            case ev.TaskSubmitted():
                self.recorded[event.originator_id] = TaskOutcome()
                if position > self.report_from:
                    self.in_range.add(event.originator_id)
            case ev.TaskRouted():
                d = event.decision
                self.decisions[event.originator_id] = (event, self._endpoints(d))
                outcome = self.recorded.setdefault(event.originator_id, TaskOutcome())
                outcome.tier, outcome.target = d.effective_tier, d.target_type
                outcome.endpoint, outcome.model = d.selected_endpoint, d.selected_model
                outcome.cost_tier = d.estimated_cost_tier
            case ev.FallbackTimerStarted():
                self._timer_started(event)
            case ev.FallbackTimerFired():
                self.recorded.setdefault(event.task_id, TaskOutcome()).timer = "fired"
                self._settle(event.task_id)
            case ev.FallbackTimerCancelled():
                self.recorded.setdefault(event.task_id, TaskOutcome()).timer = "cancelled"
                timer = self.pending.get(event.task_id)
                if timer is not None and event.reason in ("cancelled", "dead_lettered"):
                    self._decide(event.task_id, timer, "cancelled")
                self._settle(event.task_id)
            case (
                ev.EndpointRegistered()
                | ev.EndpointHealthReported()
                | ev.EndpointResourcesReported()
                | ev.EndpointDeregistered()
            ):
                self._endpoints_now = tuple(self.state.endpoints.values())
                self._endpoints_at.append((position, self._endpoints_now))
                self._recover()
            case _:
                if ending is not None:
                    self.finished[ending.task_id] = ending
                    self._settle(ending.task_id)

    def _endpoints(self, decision: Any) -> tuple[EndpointRecord, ...]:
        cited = decision.endpoint_state_position
        if cited != self.state.endpoint_state_position:
            for position, endpoints in reversed(self._endpoints_at):
                if position == cited:
                    return endpoints
        return self._endpoints_now

    def _timer_started(self, event: ev.FallbackTimerStarted) -> None:
        self.recorded.setdefault(event.task_id, TaskOutcome()).timer = "pending"
        above = self.new.tier_above(event.original_tier)
        wait = timedelta(seconds=self.new.fallback_wait_s)
        deadline = event.timestamp + wait if above else None
        timer = _Timer(event.original_tier, deadline, "pending" if above else "none")
        self.virtual[event.task_id] = timer
        if deadline is not None:
            self.pending[event.task_id] = timer
            self._pushed += 1
            heapq.heappush(self._due, (deadline, self._pushed, event.task_id))
        self._recover()  # the tier may already have a candidate under new rules

    def _decide(self, task_id: UUID, timer: _Timer, outcome: str) -> None:
        timer.outcome = outcome
        self.pending.pop(task_id, None)
        self._settle(task_id)

    def _expire(self, now: datetime) -> None:
        due = self._due
        while due and due[0][0] <= now:
            _, _, task_id = heapq.heappop(due)
            timer = self.pending.get(task_id)
            if timer is not None and timer.deadline is not None and timer.deadline <= now:
                self._decide(task_id, timer, "fired")

    def _recover(self) -> None:
        endpoints = self._endpoints_now
        for task_id, timer in list(self.pending.items()):
            tier: Any = timer.tier
            if has_candidate(tier, self.new, endpoints):
                timer.recovered_with = endpoints
                self._decide(task_id, timer, "cancelled")

    def _settle(self, task_id: UUID) -> None:
        """Compare and forget a finished task once nothing about it can change: its
        virtual timer is decided, and its recorded one has ended (a cancelled task's
        timer is cancelled by the event after the cancellation)."""
        if task_id in self.pending or task_id not in self.finished:
            return
        recorded = self.recorded.get(task_id)
        if recorded is not None and recorded.timer == "pending":
            return
        self._compare(task_id, self.finished.pop(task_id))

    def _compare(self, task_id: UUID, task: TaskRecord | None) -> None:
        recorded = self.recorded.pop(task_id, TaskOutcome())
        timer = self.virtual.pop(task_id, None)
        routed = self.decisions.pop(task_id, None)
        if task_id not in self.in_range:
            return
        self.in_range.discard(task_id)
        self.result.tasks_seen += 1
        would = self._would_route(task, routed, timer)
        if recorded.target is None:
            would.tier = would.target = would.endpoint = would.model = None
            would.cost_tier = None
        diffs = {
            f: {"recorded": getattr(recorded, f), "would": getattr(would, f)}
            for f in FIELDS
            if getattr(recorded, f) != getattr(would, f)
        }
        if diffs:
            self.result.changes[str(task_id)] = diffs
            self.result.counts.update(diffs.keys())

    def _would_route(
        self,
        task: TaskRecord | None,
        routed: tuple[ev.TaskRouted, tuple[EndpointRecord, ...]] | None,
        timer: _Timer | None,
    ) -> TaskOutcome:
        outcome = TaskOutcome(timer="none" if timer is None else timer.outcome)
        if routed is None or task is None:
            return outcome
        event, endpoints = routed
        escalate = outcome.timer == "fired"
        above = self.new.tier_above(task.route_tier) if escalate else None
        record = replace(task, escalated_to=above, fallback_reason=task.fallback_reason)
        if timer is not None and timer.recovered_with is not None:
            endpoints = timer.recovered_with  # routed when its tier came back
        decision = decide_route(
            record,
            self.new,
            endpoints,
            event.decision.endpoint_state_position,
            event.decision.decided_at,
        )
        if decision is None:
            outcome.tier, outcome.target = record.effective_tier, "none"
            return outcome
        outcome.tier, outcome.target = decision.effective_tier, decision.target_type
        outcome.endpoint, outcome.model = decision.selected_endpoint, decision.selected_model
        outcome.cost_tier = decision.estimated_cost_tier
        return outcome

    def report(self) -> WhatIfReport:
        """Compare the tasks still live at the end, and return every change."""
        for task_id in list(self.recorded):
            task = self.state.tasks.get(task_id) or self.finished.pop(task_id, None)
            self._compare(task_id, task)
        return self.result
