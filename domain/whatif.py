"""What-if: replay recorded traffic under another configuration and say, task by task,
what the routing policy and the fallback timers would have done differently.

The recorded inputs stay as they were: submissions, endpoint state over time, and when
each task waited. What is recomputed under the new configuration: whether a fallback
timer starts, whether it fires (its wait against when the tier recovered), and the
routing decision (tier, target, endpoint, model, cost tier) at the recorded moment.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from msgspec.structs import replace

from domain import events as ev
from domain.config import SchedulerConfig
from domain.routing import decide_route, has_candidate
from domain.state import SchedulerState

FIELDS = ("tier", "target", "endpoint", "model", "cost_tier", "timer")


@dataclass
class _Timer:
    tier: str
    deadline: datetime | None  # None: no timer would start under the new configuration
    outcome: str = "pending"
    recovered_at: int = 0  # the log position whose endpoint state ended the wait


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
    """Folds a recorded log and, alongside, what the new configuration would do."""

    def __init__(self, new: SchedulerConfig) -> None:
        self.new = new
        self.state = SchedulerState()
        self.recorded: dict[UUID, TaskOutcome] = {}
        self.virtual: dict[UUID, _Timer] = {}
        self.decisions: dict[UUID, ev.TaskRouted] = {}
        self.endpoints_at: dict[int, tuple[Any, ...]] = {0: ()}
        self.now: datetime | None = None

    def feed(self, position: int, event: ev.DomainEvent) -> None:
        """Fold one recorded event."""
        self.now = event.timestamp
        self._expire(event.timestamp)
        self.state.apply(event, position)
        match event:
            case ev.TaskSubmitted():
                self.recorded[event.originator_id] = TaskOutcome()
            case ev.TaskRouted():
                self.decisions[event.originator_id] = event
                d = event.decision
                outcome = self.recorded.setdefault(event.originator_id, TaskOutcome())
                outcome.tier, outcome.target = d.effective_tier, d.target_type
                outcome.endpoint, outcome.model = d.selected_endpoint, d.selected_model
                outcome.cost_tier = d.estimated_cost_tier
            case ev.FallbackTimerStarted():
                self.recorded.setdefault(event.task_id, TaskOutcome()).timer = "pending"
                above = self.new.tier_above(event.original_tier)
                wait = timedelta(seconds=self.new.fallback_wait_s)
                self.virtual[event.task_id] = _Timer(
                    event.original_tier,
                    event.timestamp + wait if above else None,
                    "pending" if above else "none",
                )
                self._recover()  # the tier may already have a candidate under new rules
            case ev.FallbackTimerFired():
                self.recorded[event.task_id].timer = "fired"
            case ev.FallbackTimerCancelled():
                self.recorded[event.task_id].timer = "cancelled"
                timer = self.virtual.get(event.task_id)
                if (
                    timer is not None
                    and timer.outcome == "pending"
                    and event.reason in ("cancelled", "dead_lettered")
                ):
                    timer.outcome = "cancelled"
            case (
                ev.EndpointRegistered()
                | ev.EndpointHealthReported()
                | ev.EndpointResourcesReported()
                | ev.EndpointDeregistered()
            ):
                self.endpoints_at[position] = tuple(self.state.endpoints.values())
                self._recover()
            case _:
                pass

    def _expire(self, now: datetime) -> None:
        for timer in self.virtual.values():
            if timer.outcome == "pending" and timer.deadline is not None and timer.deadline <= now:
                timer.outcome = "fired"

    def _recover(self) -> None:
        endpoints = list(self.state.endpoints.values())
        for timer in self.virtual.values():
            tier: Any = timer.tier
            if timer.outcome == "pending" and has_candidate(tier, self.new, endpoints):
                timer.outcome = "cancelled"
                timer.recovered_at = self.state.endpoint_state_position

    def _would_route(self, task_id: UUID, timer: str, recovered_at: int) -> TaskOutcome:
        outcome = TaskOutcome(timer=timer)
        routed = self.decisions.get(task_id)
        task = self.state.tasks.get(task_id)
        if routed is None or task is None:
            return outcome
        escalate = timer == "fired"
        above = self.new.tier_above(task.route_tier) if escalate else None
        record = replace(task, escalated_to=above, fallback_reason=task.fallback_reason)
        endpoints = list(self.state.endpoints.values())
        decision = decide_route(
            record,
            self.new,
            endpoints,
            routed.decision.endpoint_state_position,
            routed.decision.decided_at,
        )
        if decision is None:
            outcome.tier, outcome.target = record.effective_tier, "none"
            return outcome
        outcome.tier, outcome.target = decision.effective_tier, decision.target_type
        outcome.endpoint, outcome.model = decision.selected_endpoint, decision.selected_model
        outcome.cost_tier = decision.estimated_cost_tier
        return outcome

    def report(self) -> WhatIfReport:
        """Compare, task by task."""
        result = WhatIfReport()
        for task_id, recorded in self.recorded.items():
            result.tasks_seen += 1
            timer = self.virtual.get(task_id)
            virtual_timer = "none" if timer is None else timer.outcome
            would = self._would_route(
                task_id, virtual_timer, timer.recovered_at if timer is not None else 0
            )
            if recorded.target is None:
                would.tier = would.target = would.endpoint = would.model = None
                would.cost_tier = None
            diffs = {
                f: {"recorded": getattr(recorded, f), "would": getattr(would, f)}
                for f in FIELDS
                if getattr(recorded, f) != getattr(would, f)
            }
            if diffs:
                result.changes[str(task_id)] = diffs
                result.counts.update(diffs.keys())
        return result
