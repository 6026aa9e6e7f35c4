"""Escalation follows recovery (issue #13).

A fallback timer escalates a task one tier up, and the escalation sticks (README,
"Escalation sticks"), except where it leads nowhere: a task escalated to a tier that
cannot route it (``claude_enabled = false`` above a standard task with no Ollama
endpoint) goes back to its own tier as soon as that tier can route it again. That is
two facts: ``TaskDeescalated(reason="tier_recovered")``, and a ``TaskRouted`` decision at
its own tier with the same reason, appended at once (like a fallback's decision), even
if no agent can take the task in this pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from tierlog.domain import events as ev
from tierlog.domain.aggregates import task as tasks
from tierlog.domain.aggregates.task import TaskRecord, is_overdue
from tierlog.domain.backoff import is_backing_off
from tierlog.domain.config import TierName
from tierlog.domain.unit_of_work import UnitOfWork

TIER_RECOVERED = "tier_recovered"
"""Why an escalated task went back to its own tier, and why it was routed there."""

Router = Callable[[TaskRecord], ev.RoutingDecision | None]


def stuck_escalations(
    uow: UnitOfWork, available: Mapping[TierName, bool], now: datetime
) -> list[TaskRecord]:
    """Queued tasks escalated to a tier with no candidate whose own tier has one (in
    queue order). Only the escalated tasks of tiers that cannot route are looked at."""
    state = uow.state
    stuck: list[TaskRecord] = []
    for tier, ok in available.items():
        if ok:
            continue
        for task in state.escalated_tasks(tier):
            if (
                task.escalated_to == tier
                and available.get(task.route_tier, False)
                and not is_overdue(task, now)
                and not is_backing_off(task.not_before, now)
            ):
                stuck.append(task)
    return stuck


def follow_recovery(
    uow: UnitOfWork, available: Mapping[TierName, bool], now: datetime, route: Router
) -> None:
    """Send every stuck escalation back to its own tier, each with its own decision."""
    state = uow.state
    for task in stuck_escalations(uow, available, now):
        uow.emit(tasks.deescalate(task, TIER_RECOVERED, now))
        back = state.tasks[task.task_id]
        decision = route(back)
        if decision is not None:
            uow.emit(tasks.route(back, decision, now, reason=TIER_RECOVERED))
