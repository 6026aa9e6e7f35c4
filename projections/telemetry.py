"""Telemetry counters: a pure fold of events into counts and latency histograms.

Issue #3 persists this read model; here it is the in-memory fold that the demo's
summary and the tests read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from domain import events as ev

# Histogram bucket upper bounds in milliseconds (Prometheus-style, cumulative on export).
BUCKETS_MS: tuple[float, ...] = (1, 5, 10, 50, 100, 500, 1_000, 5_000, 10_000, 60_000, 300_000)


class Histogram:
    """Counts of observations per bucket, with their sum."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS_MS) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value_ms: float) -> None:
        """Add one observation."""
        index = next((i for i, b in enumerate(BUCKETS_MS) if value_ms <= b), len(BUCKETS_MS))
        self.counts[index] += 1
        self.total += value_ms
        self.n += 1

    def as_dict(self) -> dict[str, Any]:
        """Buckets, count and sum."""
        labels = [f"le_{b:g}" for b in BUCKETS_MS] + ["le_inf"]
        return {
            "buckets": dict(zip(labels, self.counts, strict=True)),
            "count": self.n,
            "sum_ms": self.total,
        }


class TelemetryCounters:
    """Counters of SPEC §3, folded from events."""

    def __init__(self) -> None:
        self.events = 0
        self.task_state: dict[UUID, str] = {}
        self.task_tier: dict[UUID, str] = {}
        self.submitted_at: dict[UUID, datetime] = {}
        self.routing: Counter[tuple[str, str]] = Counter()
        self.assignments_by_target: Counter[str] = Counter()
        self.fallback_assignments = 0
        self.timers_started = 0
        self.timers_fired = 0
        self.timers_cancelled: Counter[str] = Counter()
        self.retries = 0
        self.reclaims: Counter[str] = Counter()
        self.dead_letters: Counter[str] = Counter()
        self.fallback_wait = Histogram()
        self.submit_to_assign = Histogram()

    def apply(self, event: ev.DomainEvent) -> None:
        """Fold one event."""
        self.events += 1
        task_id = event.originator_id
        match event:
            case ev.TaskSubmitted():
                self.task_state[task_id] = "queued"
                self.submitted_at[task_id] = event.timestamp
            case ev.TaskClassified():
                self.task_tier[task_id] = event.route_tier
            case ev.TaskRouted():
                d = event.decision
                self.routing[(d.effective_tier, d.target_type)] += 1
            case ev.TaskAssigned():
                self.task_state[task_id] = "assigned"
                self.assignments_by_target[event.decision.target_type] += 1
                self.fallback_assignments += event.decision.fallback_used
                waited = event.timestamp - self.submitted_at.get(task_id, event.timestamp)
                self.submit_to_assign.observe(waited.total_seconds() * 1000)
            case ev.TaskCompleted():
                self.task_state[task_id] = "completed"
            case ev.TaskRequeued() | ev.TaskRetried():
                self.task_state[task_id] = "queued"
                self.retries += (
                    event.reason == "failed" if isinstance(event, ev.TaskRequeued) else 0
                )
            case ev.TaskReclaimed():
                self.reclaims[event.reason] += 1
            case ev.TaskDeadLettered():
                self.task_state[task_id] = "dead_lettered"
                self.dead_letters[event.reason] += 1
            case ev.TaskCancelled():
                self.task_state[task_id] = "cancelled"
            case ev.TaskEscalated():
                self.task_tier[task_id] = event.to_tier
            case ev.FallbackTimerStarted():
                self.timers_started += 1
            case ev.FallbackTimerFired():
                self.timers_fired += 1
                self.fallback_wait.observe(event.wait_ms)
            case ev.FallbackTimerCancelled():
                self.timers_cancelled[event.reason] += 1
            case _:
                pass

    def apply_all(self, events: Iterable[ev.DomainEvent]) -> TelemetryCounters:
        """Fold many events; returns self."""
        for event in events:
            self.apply(event)
        return self

    def tasks_by_state_and_tier(self) -> dict[str, dict[str, int]]:
        """Task counts by current state, then by (effective) tier."""
        table: dict[str, Counter[str]] = {}
        for task_id, state in self.task_state.items():
            table.setdefault(state, Counter())[self.task_tier.get(task_id, "unknown")] += 1
        return {state: dict(sorted(c.items())) for state, c in sorted(table.items())}

    def as_dict(self) -> dict[str, Any]:
        """Every counter as plain data."""
        return {
            "events": self.events,
            "tasks": len(self.task_state),
            "tasks_by_state_and_tier": self.tasks_by_state_and_tier(),
            "routing_decisions": {f"{t}->{g}": n for (t, g), n in sorted(self.routing.items())},
            "assignments_by_target": dict(sorted(self.assignments_by_target.items())),
            "fallback_assignments": self.fallback_assignments,
            "timers": {
                "started": self.timers_started,
                "fired": self.timers_fired,
                "cancelled": dict(sorted(self.timers_cancelled.items())),
            },
            "retries": self.retries,
            "reclaims": dict(sorted(self.reclaims.items())),
            "dead_letters": dict(sorted(self.dead_letters.items())),
            "fallback_wait_ms": self.fallback_wait.as_dict(),
            "submit_to_assign_ms": self.submit_to_assign.as_dict(),
        }
