"""The audit's invariant and determinism checkers as they were before the streaming
rewrite (one ``match`` per event, a full ``SchedulerState``, nothing ever dropped),
kept as the oracle that ``replay_check`` must agree with."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from msgspec.structs import replace

from tierlog.domain import events as ev
from tierlog.domain.aggregates.endpoint import EndpointRecord
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.replay.invariants import Violation
from tierlog.domain.routing import decide_route
from tierlog.domain.state import SchedulerState


@dataclass
class ReferenceInvariantChecker:
    """Folds events and reports every rule they break (SPEC §1, issue #4)."""

    versions: dict[UUID, int] = field(default_factory=dict)
    routed_generation: dict[UUID, int] = field(default_factory=dict)
    assigned_generation: dict[UUID, int] = field(default_factory=dict)
    task_state: dict[UUID, str] = field(default_factory=dict)
    lease: dict[UUID, datetime] = field(default_factory=dict)
    open_timers: dict[UUID, datetime] = field(default_factory=dict)
    leader_epoch: int = 0
    # Issue #13: who holds each task, and its deadline while it may still run.
    holder: dict[UUID, str] = field(default_factory=dict)
    complete_by: dict[UUID, datetime] = field(default_factory=dict)

    def check(self, position: int, event: ev.DomainEvent) -> list[Violation]:
        """The rules ``event`` breaks, given everything before it."""
        found: list[Violation] = []

        def bad(rule: str, detail: str, aggregate: UUID | None = None) -> None:
            found.append(Violation(position, str(aggregate or event.originator_id), rule, detail))

        last = self.versions.get(event.originator_id, 0)
        if event.originator_version != last + 1:
            bad("versions_contiguous", f"version {event.originator_version} after {last}")
        self.versions[event.originator_id] = event.originator_version
        task_id = event.originator_id
        match event:
            case ev.TaskSubmitted() | ev.TaskRetried():
                self.task_state[task_id] = "queued"
                self._set_deadline(task_id, event.complete_by)
            case ev.TaskRequeued():
                self.task_state[task_id] = "queued"
            case ev.TaskRouted():
                self.routed_generation[task_id] = event.generation
            case ev.TaskAssigned():
                if self.routed_generation.get(task_id) != event.generation:
                    bad(
                        "routed_before_assigned",
                        f"no routing decision for generation {event.generation}",
                    )
                if self.assigned_generation.get(task_id, -1) >= event.generation:
                    bad(
                        "assigned_once_per_generation",
                        f"generation {event.generation} assigned again",
                    )
                if self.task_state.get(task_id) != "queued":
                    bad("assigned_from_queue", f"assigned while {self.task_state.get(task_id)}")
                self.assigned_generation[task_id] = event.generation
                self.task_state[task_id] = "assigned"
                self.holder[task_id] = event.agent_id
                self.lease[task_id] = event.lease_expires_at
            case ev.TaskHeartbeated():
                self.lease[task_id] = event.lease_expires_at
            case ev.TaskReclaimed():
                expiry = self.lease.get(task_id)
                if event.reason == "lease_expired" and (expiry is None or event.timestamp < expiry):
                    bad(
                        "reclaim_after_lease",
                        f"reclaimed at {event.timestamp.isoformat()}, "
                        f"lease until {expiry.isoformat() if expiry else 'none'}",
                    )
                self.task_state[task_id] = "reclaimed"
            case ev.TaskCompleted():
                self.task_state[task_id] = "completed"
                self.complete_by.pop(task_id, None)
            case ev.TaskDeadLettered():
                deadline = self.complete_by.get(task_id)
                if event.reason == "deadline_passed" and (
                    deadline is None or event.timestamp < deadline
                ):
                    due = deadline.isoformat() if deadline else "none"
                    bad(
                        "dead_letter_at_deadline",
                        f"at {event.timestamp.isoformat()}, deadline {due}",
                    )
                self.task_state[task_id] = "dead_lettered"
            case ev.TaskCancelled():
                self._check_cancel(event, bad)
                self.task_state[task_id] = "cancelled"
                self.complete_by.pop(task_id, None)
            case ev.FallbackTimerStarted():
                if event.task_id in self.open_timers:
                    bad("one_timer_per_task", "a second timer started", event.task_id)
                self.open_timers[event.task_id] = event.fires_at
            case ev.FallbackTimerFired():
                fires_at = self.open_timers.pop(event.task_id, None)
                if fires_at is None:
                    bad("timer_ends_once", "fired without a pending timer", event.task_id)
                elif event.timestamp < fires_at:
                    bad(
                        "timer_not_early",
                        f"fired at {event.timestamp.isoformat()}, due {fires_at.isoformat()}",
                        event.task_id,
                    )
                if self.task_state.get(event.task_id) != "queued":
                    bad(
                        "timer_only_while_queued",
                        f"fired while the task was {self.task_state.get(event.task_id)}",
                        event.task_id,
                    )
                deadline = self.complete_by.get(event.task_id)
                if deadline is not None and event.timestamp >= deadline:
                    bad(
                        "no_timer_after_deadline",
                        f"fired at {event.timestamp.isoformat()}, "
                        f"the task's deadline was {deadline.isoformat()}",
                        event.task_id,
                    )
            case ev.FallbackTimerCancelled():
                if self.open_timers.pop(event.task_id, None) is None:
                    bad("timer_ends_once", "cancelled without a pending timer", event.task_id)
            case ev.SchedulerLeaderElected():
                if event.epoch <= self.leader_epoch:
                    bad("leader_epoch_rises", f"epoch {event.epoch} after {self.leader_epoch}")
                self.leader_epoch = max(self.leader_epoch, event.epoch)
            case _:
                pass
        return found

    def _set_deadline(self, task_id: UUID, deadline: datetime | None) -> None:
        if deadline is None:
            self.complete_by.pop(task_id, None)
        else:
            self.complete_by[task_id] = deadline

    def _check_cancel(self, event: ev.TaskCancelled, bad: Any) -> None:
        state = self.task_state.get(event.originator_id)
        named = (event.agent_id, event.generation)
        if state == "assigned":
            held = (
                self.holder.get(event.originator_id),
                self.assigned_generation.get(event.originator_id, -1),
            )
            if named != held:
                bad(
                    "cancel_names_holder",
                    f"{held[0]} held generation {held[1]}; the cancellation names "
                    f"{named[0]} at generation {named[1]}",
                )
        elif named != (None, None):
            bad(
                "cancel_names_holder",
                f"names {named[0]} at generation {named[1]}, but the task was {state}",
            )


class ReferenceDeterminismChecker:
    """Folds the log and recomputes each ``TaskRouted`` decision as it comes."""

    def __init__(self) -> None:
        self.state = SchedulerState()
        self.configs: dict[int, SchedulerConfig] = {0: SchedulerConfig()}
        self.endpoints_at: dict[int, tuple[EndpointRecord, ...]] = {0: ()}

    def check(self, position: int, event: ev.DomainEvent) -> list[Violation]:
        """Violations at ``event`` (recomputed before it is folded in), then fold it."""
        found: list[Violation] = []
        if isinstance(event, ev.TaskRouted):
            found.extend(self._recompute(position, event))
        self.state.apply(event, position)
        if isinstance(event, ev.SchedulerConfigured):
            self.configs[position] = event.config
        elif self.state.endpoint_state_position == position:
            self.endpoints_at[position] = tuple(self.state.endpoints.values())
        return found

    def _recompute(self, position: int, event: ev.TaskRouted) -> list[Violation]:
        recorded = event.decision
        config = self.configs.get(recorded.config_position)
        endpoints = self.endpoints_at.get(recorded.endpoint_state_position)
        task = self.state.tasks.get(event.originator_id)
        where = str(event.originator_id)
        if config is None or endpoints is None or task is None:
            missing = (
                "configuration"
                if config is None
                else "endpoint state"
                if endpoints is None
                else "task"
            )
            return [
                Violation(
                    position,
                    where,
                    "decision_deterministic",
                    f"the decision cites a {missing} the log does not hold",
                )
            ]
        again = decide_route(
            task,
            config,
            endpoints,
            recorded.endpoint_state_position,
            recorded.decided_at,
            config_position=recorded.config_position,
        )
        expected = replace(recorded, scoring_duration_us=0)
        if again is None or again != expected:
            return [
                Violation(
                    position,
                    where,
                    "decision_deterministic",
                    f"recorded {expected!r} but the policy gives {again!r}",
                )
            ]
        return []
