"""Invariants an audit checks while replaying a log: pure, one event at a time.

Memory follows the live tasks, not the log: a task that reaches a state it can never
leave (``completed``, ``cancelled``: SPEC §1.1; ``dead_lettered`` can be retried, so
it stays) is dropped from the per-task facts, and only its id, last version and final
state are remembered (:attr:`InvariantChecker.finished`, about 120 bytes each), for
the most recent ``remember_finished`` of them. An event that arrives for such a task
later is reported as ``finished_stays_finished`` (and, if its version does not follow,
``versions_contiguous`` as before); the task is then tracked again from its final
state, without the generations and lease it had before it finished, so later rules
about it may report more than the first finding. For a task finished longer ago than
that, such an event is still reported, as ``versions_contiguous`` ("version N after
0"): a store never holds a second version 1 of an aggregate.

Aggregates are filed under their id's 32 hex digits (:func:`aggregate_key`), the form
the log stores: strings hash once and compare in C, where ``UUID`` keys would run
Python code on every lookup.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from tierlog.domain import events as ev
from tierlog.domain.replay import running_rules as rules


@dataclass(frozen=True)
class Violation:
    """A broken rule: where, in which aggregate, which rule, and what was seen."""

    position: int
    aggregate_id: str
    rule: str
    detail: str


# A check handler: (position, aggregate key, event); it appends what it finds to a sink.
Handler = Callable[[int, str, Any], None]

# The states a task never leaves; ``InvariantChecker.finished`` packs the index.
FINAL_STATES: tuple[str, str] = ("completed", "cancelled")

# How many finished tasks are remembered (about 30 MB).
REMEMBER_FINISHED = 250_000


def aggregate_key(aggregate_id: UUID) -> str:
    """The key the checkers file an aggregate under: its id as 32 lowercase hex digits,
    the form the SQLite log stores and ``EventLog.iter_raw`` gives on every store."""
    return aggregate_id.hex


class TaskFacts(msgspec.Struct, gc=False):
    """What the invariants remember of one live task (mutable, no GC tracking: there
    may be many, and they hold no references that could form a cycle)."""

    version: int = 0
    state: str | None = None
    routed_generation: int | None = None
    assigned_generation: int = -1
    lease: datetime | None = None
    agent: str | None = None  # the agent of the last assignment
    complete_by: datetime | None = None  # the deadline in force (submitted or retried)
    not_before: datetime | None = None  # a failed task's retry backoff (issue #13)


class SinkChecker(ABC):
    """A checker that streams its findings into a sink (``violations``, which the audit
    may share between checkers) through ``feed``, and answers one event at a time
    through ``check``."""

    violations: list[Violation]

    @abstractmethod
    def feed(self, position: int, key: str, event: ev.DomainEvent) -> None:
        """Check one event of the aggregate filed under ``key``; findings go to the sink."""

    def check(self, position: int, event: ev.DomainEvent) -> list[Violation]:
        """The violations ``event`` brings, given everything before it."""
        sink = self.violations
        before = len(sink)
        self.feed(position, aggregate_key(event.originator_id), event)
        found = sink[before:]
        del sink[before:]
        return found


class InvariantChecker(SinkChecker):
    """Folds events and reports every rule they break (SPEC §1, issue #4).

    ``check(position, event)`` returns what one event breaks. The audit's fast path is
    ``handlers[type(event)](position, key, event)`` with the aggregate key already at
    hand (see :func:`aggregate_key`), which appends to :attr:`violations`.
    """

    def __init__(
        self, sink: list[Violation] | None = None, remember_finished: int = REMEMBER_FINISHED
    ) -> None:
        # Where violations go, in the order found; the audit gives both checkers one sink.
        self.violations: list[Violation] = sink if sink is not None else []
        self.versions: dict[str, int] = {}  # aggregates other than tasks
        self.tasks: dict[str, TaskFacts] = {}  # live tasks only
        # Finished tasks: key -> last version << 1 | index in FINAL_STATES. A packed small
        # int is a shared object, so an entry costs the dict slot and the key string and
        # nothing more: this is the one map that grows with the log.
        self.finished: dict[str, int] = {}
        # Keys in the order they finished, to forget the oldest (a key revived since is
        # forgotten early, which only makes a later report less precise).
        self._finish_order: deque[str] = deque()
        self.remember_finished = remember_finished
        self.open_timers: dict[str, datetime] = {}  # by task key: when each is due
        self.leader_epoch = 0  # the fencing epoch of the last election (several nodes)
        self.handlers: dict[type[ev.DomainEvent], Handler] = {
            ev.TaskSubmitted: self._submitted,
            ev.TaskClassified: self._task_event,
            ev.TaskRouted: self._routed,
            ev.TaskAssigned: self._assigned,
            ev.TaskHeartbeated: self._heartbeated,
            ev.TaskCompleted: self._completed,
            ev.TaskFailed: self._task_event,
            ev.TaskReclaimed: self._reclaimed,
            ev.TaskEscalated: self._task_event,
            ev.TaskDeescalated: self._task_event,
            ev.TaskRequeued: self._requeued,
            ev.TaskDeadLettered: self._dead_lettered,
            ev.TaskRetried: self._submitted,
            ev.TaskCancelled: self._cancelled,
            ev.FallbackTimerStarted: self._timer_started,
            ev.FallbackTimerFired: self._timer_fired,
            ev.FallbackTimerCancelled: self._timer_cancelled,
            ev.SchedulerLeaderElected: self._leader_elected,
        }
        for event_type in ev.EVENT_TYPES:  # the rest: the version check alone
            self.handlers.setdefault(event_type, self._version)

    def feed(self, position: int, key: str, event: ev.DomainEvent) -> None:
        """Check one event of the aggregate filed under ``key``; findings go to the sink."""
        self.handlers.get(type(event), self._version)(position, key, event)

    # --- helpers ----------------------------------------------------------------------

    def _bad(self, position: int, aggregate: UUID, rule: str, detail: str) -> None:
        self.violations.append(Violation(position, str(aggregate), rule, detail))

    def _broken(self, position: int, aggregate: UUID, found: rules.Broken | None) -> None:
        if found is not None:
            self._bad(position, aggregate, *found)

    def _facts(self, position: int, key: str, event: ev.DomainEvent) -> TaskFacts:
        """The task's facts after the version check of ``event``."""
        facts = self.tasks.get(key)
        if facts is None:
            return self._untracked(position, key, event)
        version = event.originator_version
        if version != facts.version + 1:
            self._version_gap(position, event, facts.version)
        facts.version = version
        return facts

    def _untracked(self, position: int, key: str, event: ev.DomainEvent) -> TaskFacts:
        """Start tracking a task: new, or finished before (then that is reported too)."""
        facts = self.tasks[key] = TaskFacts()
        mark = self.finished.pop(key, None)
        if mark is not None:
            facts.version, facts.state = mark >> 1, FINAL_STATES[mark & 1]
        if event.originator_version != facts.version + 1:
            self._version_gap(position, event, facts.version)
        facts.version = event.originator_version
        if mark is not None:
            self._bad(
                position,
                event.originator_id,
                "finished_stays_finished",
                f"{type(event).__name__} after the task was {facts.state}",
            )
        return facts

    def _version_gap(self, position: int, event: ev.DomainEvent, last: int) -> None:
        self._bad(
            position,
            event.originator_id,
            "versions_contiguous",
            f"version {event.originator_version} after {last}",
        )

    def _finish(self, key: str, facts: TaskFacts, final: int) -> None:
        """Drop a task that reached ``FINAL_STATES[final]``, remembering only that."""
        del self.tasks[key]
        self.finished[key] = facts.version << 1 | final
        order = self._finish_order
        order.append(key)
        if len(order) > self.remember_finished:
            self.finished.pop(order.popleft(), None)

    def _state_of(self, key: str) -> str | None:
        facts = self.tasks.get(key)
        if facts is not None:
            return facts.state
        mark = self.finished.get(key)
        return None if mark is None else FINAL_STATES[mark & 1]

    def _version(self, position: int, key: str, event: ev.DomainEvent) -> None:
        """The version check of an aggregate other than a task (all their rules need)."""
        last = self.versions.get(key, 0)
        version = event.originator_version
        if version != last + 1:
            self._version_gap(position, event, last)
        self.versions[key] = version

    # --- task events ------------------------------------------------------------------

    def _task_event(self, position: int, key: str, event: ev.DomainEvent) -> None:
        self._facts(position, key, event)

    def _submitted(self, position: int, key: str, e: ev.TaskSubmitted | ev.TaskRetried) -> None:
        facts = self._facts(position, key, e)
        facts.state = "queued"
        facts.complete_by = e.complete_by

    def _queued(
        self, position: int, key: str, e: ev.TaskSubmitted | ev.TaskRequeued | ev.TaskRetried
    ) -> None:
        facts = self._facts(position, key, e)
        facts.state = "queued"
        facts.not_before = None

    def _requeued(self, position: int, key: str, e: ev.TaskRequeued) -> None:
        facts = self._facts(position, key, e)
        facts.state = "queued"
        facts.not_before = e.not_before

    def _check_backoff(self, position: int, facts: TaskFacts, e: ev.TaskAssigned) -> None:
        """No assignment before the ``not_before`` its requeue recorded."""
        if facts.not_before is not None and e.timestamp < facts.not_before:
            self._bad(
                position,
                e.originator_id,
                "assigned_after_backoff",
                f"assigned at {e.timestamp.isoformat()}, not before {facts.not_before.isoformat()}",
            )
        facts.not_before = None

    def _routed(self, position: int, key: str, e: ev.TaskRouted) -> None:
        self._facts(position, key, e).routed_generation = e.generation

    def _assigned(self, position: int, key: str, e: ev.TaskAssigned) -> None:
        facts = self._facts(position, key, e)
        generation = e.generation
        if facts.routed_generation != generation:
            self._bad(
                position,
                e.originator_id,
                "routed_before_assigned",
                f"no routing decision for generation {generation}",
            )
        if facts.assigned_generation >= generation:
            self._bad(
                position,
                e.originator_id,
                "assigned_once_per_generation",
                f"generation {generation} assigned again",
            )
        if facts.state != "queued":
            self._bad(
                position, e.originator_id, "assigned_from_queue", f"assigned while {facts.state}"
            )
        self._check_backoff(position, facts, e)
        facts.assigned_generation = generation
        facts.state = "assigned"
        facts.lease = e.lease_expires_at
        facts.agent = e.agent_id

    def _heartbeated(self, position: int, key: str, e: ev.TaskHeartbeated) -> None:
        self._facts(position, key, e).lease = e.lease_expires_at

    def _reclaimed(self, position: int, key: str, e: ev.TaskReclaimed) -> None:
        facts = self._facts(position, key, e)
        expiry = facts.lease
        if e.reason == "lease_expired" and (expiry is None or e.timestamp < expiry):
            self._bad(
                position,
                e.originator_id,
                "reclaim_after_lease",
                f"reclaimed at {e.timestamp.isoformat()}, "
                f"lease until {expiry.isoformat() if expiry else 'none'}",
            )
        facts.state = "reclaimed"

    def _completed(self, position: int, key: str, e: ev.TaskCompleted) -> None:
        facts = self._facts(position, key, e)
        facts.state = "completed"
        self._finish(key, facts, 0)

    def _dead_lettered(self, position: int, key: str, e: ev.TaskDeadLettered) -> None:
        facts = self._facts(position, key, e)
        self._broken(position, e.originator_id, rules.dead_letter_at_deadline(e, facts))
        facts.state = "dead_lettered"

    def _cancelled(self, position: int, key: str, e: ev.TaskCancelled) -> None:
        facts = self._facts(position, key, e)
        self._broken(position, e.originator_id, rules.cancel_names_holder(e, facts))
        facts.state = "cancelled"
        self._finish(key, facts, 1)

    # --- scheduler, agent and endpoint events -----------------------------------------

    def _leader_elected(self, position: int, key: str, e: ev.SchedulerLeaderElected) -> None:
        self._version(position, key, e)
        if e.epoch <= self.leader_epoch:
            self._bad(
                position,
                e.originator_id,
                "leader_epoch_rises",
                f"{e.node_id} elected under epoch {e.epoch} after epoch {self.leader_epoch}",
            )
        self.leader_epoch = max(self.leader_epoch, e.epoch)

    def _timer_started(self, position: int, key: str, e: ev.FallbackTimerStarted) -> None:
        self._version(position, key, e)
        task = aggregate_key(e.task_id)
        if task in self.open_timers:
            self._bad(position, e.task_id, "one_timer_per_task", "a second timer started")
        self.open_timers[task] = e.fires_at

    def _timer_fired(self, position: int, key: str, e: ev.FallbackTimerFired) -> None:
        self._version(position, key, e)
        task = aggregate_key(e.task_id)
        fires_at = self.open_timers.pop(task, None)
        if fires_at is None:
            self._bad(position, e.task_id, "timer_ends_once", "fired without a pending timer")
        elif e.timestamp < fires_at:
            self._bad(
                position,
                e.task_id,
                "timer_not_early",
                f"fired at {e.timestamp.isoformat()}, due {fires_at.isoformat()}",
            )
        state = self._state_of(task)
        if state != "queued":
            self._bad(
                position,
                e.task_id,
                "timer_only_while_queued",
                f"fired while the task was {state}",
            )
        facts = self.tasks.get(task)
        if facts is not None:
            self._broken(position, e.task_id, rules.no_timer_after_deadline(e, facts))

    def _timer_cancelled(self, position: int, key: str, e: ev.FallbackTimerCancelled) -> None:
        self._version(position, key, e)
        if self.open_timers.pop(aggregate_key(e.task_id), None) is None:
            self._bad(position, e.task_id, "timer_ends_once", "cancelled without a pending timer")
