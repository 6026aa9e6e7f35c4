"""The scheduler's state: every aggregate folded from the log, and the indexes across them.

``SchedulerState.apply(event, position)`` is the only way state changes, so state
rebuilt from the log equals live state by construction. Each aggregate's record
evolves through its own module's pure ``evolve`` (``tierlog.domain.aggregates``); this
class composes them and owns only what spans aggregates: the queue in order (and by
tier, with the indexes a pass reads: ``queue_indexes``), the idle agents in order (and
by host), the deadline heap and the agents' token digests (an idempotency key needs no
index: it derives its task's id). While a unit of
work is open, every change is recorded in its undo log (``self.undo``) so a batch that
loses a race can be taken back.

With a ``Retention`` policy (the runtime's), records that nothing live needs leave the
state once their grace window has passed (``tierlog.domain.working_set``): memory
follows the work in flight, not the log's length.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from sortedcontainers import SortedList

from tierlog.domain import events as ev
from tierlog.domain.aggregates import agent as agent_aggregate
from tierlog.domain.aggregates import endpoint as endpoint_aggregate
from tierlog.domain.aggregates import scheduler as scheduler_aggregate
from tierlog.domain.aggregates import task as task_aggregate
from tierlog.domain.aggregates.agent import AgentRecord, host_of
from tierlog.domain.aggregates.endpoint import EndpointRecord
from tierlog.domain.aggregates.scheduler import PendingTimer, SchedulerRecord
from tierlog.domain.aggregates.task import TaskRecord
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.queue_indexes import QueueIndexes
from tierlog.domain.undo import MISSING, UndoLog
from tierlog.domain.working_set import Ref, Retention, Settled, WorkingSet

# (due timestamp, tie-break counter, kind, task id, generation)
Deadline = tuple[float, int, str, UUID, int]
STALE_DEADLINES_SLACK = 1024
"""Stale deadline entries tolerated beyond twice the live tasks and timers."""
# Each aggregate's evolve functions, looked up once per event by its exact type.
_TASK = task_aggregate.EVOLVERS
_AGENT = agent_aggregate.EVOLVERS
_ENDPOINT = endpoint_aggregate.EVOLVERS


class SchedulerState(QueueIndexes, WorkingSet):
    """Everything the scheduler decides from, folded from the log."""

    def __init__(
        self,
        task_ttl_s: float = 600.0,
        *,
        keep_finished: bool = True,
        retention: Retention | None = None,
    ) -> None:
        """An empty state. ``keep_finished=False`` is for looking at the past (time
        travel): a task is dropped when it completes or is cancelled (states nothing
        leaves) and only counted in ``finished_counts``, so memory follows the live tasks
        instead of the log's length.

        ``retention`` is the running scheduler's: settled records leave after a grace
        window, and whoever folds or decides hands them back through ``recalled`` (read
        from the store) when an event or a command needs one (see ``missing_for``).
        Without it every record is kept."""
        self.task_ttl_s = task_ttl_s
        self.keep_finished = keep_finished
        self.retention = retention
        # Settled records in the order they settled, waiting for their grace to end.
        self.settled: deque[Settled] = deque()
        # Records out of memory, handed back for the decision or fold at hand (the
        # runtime fills and clears it; it is a cache, not state).
        self.recalled: dict[Ref, Any] = {}
        # Tasks dropped when they finished, by (state, effective tier).
        self.finished_counts: dict[tuple[str, str], int] = {}
        self.position = 0
        self.tasks: dict[UUID, TaskRecord] = {}
        self.queue: SortedList = SortedList()
        # The same entries by effective tier: a pass with no idle agent visits only
        # the tiers that need a timer started.
        self.queued_by_tier: dict[str, SortedList] = {}
        # Of those, the ones with no pending timer and not escalated (the only ones a
        # pass with no candidate for their tier may start a timer for), and the
        # escalated ones (the only ones recovery may send back): during an outage a
        # pass looks at these, not at a backlog that may hold 100,000 tasks.
        self.untimed_by_tier: dict[str, SortedList] = {}
        self.escalated_by_tier: dict[str, SortedList] = {}
        # And those with a pending timer: whether a tier that can route again has any.
        self.timed_by_tier: dict[str, SortedList] = {}
        # How many queued tasks need each set of capabilities.
        self.queued_capabilities: dict[tuple[str, ...], int] = {}
        self.agents: dict[str, AgentRecord] = {}
        # Idle agents, each with the log position at which it became idle: the longest
        # idle goes first, and positions make that order the same live and rebuilt.
        self.idle_agents: dict[str, int] = {}
        self.idle_order: SortedList = SortedList()
        # The same, per host of the agents' Ollama, for the ollama_host preference.
        self.idle_by_host: dict[str, SortedList] = {}
        self.endpoints: dict[str, EndpointRecord] = {}
        self.endpoint_state_position = 0
        self.scheduler = SchedulerRecord()
        self.timers: dict[UUID, PendingTimer] = {}
        # Bearer token digests of registered agents, for the HTTP edge.
        self.agent_tokens: dict[str, str] = {}
        self.deadlines: list[Deadline] = []
        self._deadline_counter = 0
        # The open unit of work's undo log (None when no unit of work is open).
        self.undo: UndoLog | None = None
        # The earliest time an idle agent may have fallen silent (None: look now). A
        # cache of the last liveness sweep (``domain/liveness.py``), not folded state.
        self.liveness_due: datetime | None = None
        self._handlers: dict[type[ev.DomainEvent], Callable[[Any, int], None]] = {
            ev.TaskSubmitted: self._task_submitted,
            ev.TaskClassified: self._task_classified,
            ev.TaskRouted: self._task_evolved,
            ev.TaskAssigned: self._task_assigned,
            ev.TaskHeartbeated: self._task_heartbeated,
            ev.TaskCompleted: self._task_completed,
            ev.TaskFailed: self._task_left_agent,
            ev.TaskReclaimed: self._task_left_agent,
            ev.TaskEscalated: self._task_escalated,
            ev.TaskRequeued: self._task_back_in_queue,
            ev.TaskDeadLettered: self._task_dead_lettered,
            ev.TaskRetried: self._task_back_in_queue,
            ev.TaskCancelled: self._task_cancelled,
            ev.FallbackTimerStarted: self._timer_started,
            ev.FallbackTimerFired: self._timer_ended,
            ev.FallbackTimerCancelled: self._timer_ended,
            ev.SchedulerConfigured: self._scheduler_evolved,
            ev.SchedulerLeaderElected: self._scheduler_evolved,
            ev.AgentRegistered: self._agent_registered,
            ev.AgentReserved: self._agent_not_idle,
            ev.AgentWentOffline: self._agent_not_idle,
            ev.AgentCameBack: self._agent_came_back,
            ev.TaskDeescalated: self._task_deescalated,
            ev.AgentDeregistered: self._agent_not_idle,
            ev.EndpointRegistered: self._endpoint_evolved,
            ev.EndpointHealthReported: self._endpoint_evolved,
            ev.EndpointResourcesReported: self._endpoint_evolved,
            ev.EndpointDeregistered: self._endpoint_evolved,
        }

    # --- the scheduler aggregate's record, read as plain attributes --------------------

    @property
    def scheduler_version(self) -> int:
        """The scheduler stream's version."""
        return self.scheduler.version

    @property
    def config(self) -> SchedulerConfig | None:
        """The last recorded configuration (None: none recorded yet)."""
        return self.scheduler.config

    @property
    def config_position(self) -> int:
        """Where the last configuration was recorded (0: none yet)."""
        return self.scheduler.config_position

    def _push_deadline(self, when: datetime, kind: str, task_id: UUID, generation: int) -> None:
        # Pushes are not undone: entries are checked against state when they come due.
        self._deadline_counter += 1
        entry = (when.timestamp(), self._deadline_counter, kind, task_id, generation)
        heapq.heappush(self.deadlines, entry)

    def set_liveness_due(self, when: datetime) -> None:
        """When the next liveness sweep is needed (undone with its unit of work)."""
        self._set_scalar("liveness_due", when)

    # --- reading --------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest live deadline (a POSIX timestamp), dropping stale ones."""
        while self.deadlines:
            entry = self.deadlines[0]
            if self.deadline_is_live(entry):
                return entry[0]
            heapq.heappop(self.deadlines)
        return None

    def deadlines_mostly_stale(self) -> bool:
        """Whether stale heap entries may far outnumber the live ones: a live task has at
        most two entries and a timer one, so only a heap longer than twice their number
        (and some slack) is worth the scan of ``compact_deadlines``."""
        live_at_most = 2 * (len(self.tasks) + len(self.timers))
        return len(self.deadlines) > live_at_most + STALE_DEADLINES_SLACK

    def compact_deadlines(self) -> int:
        """Drop every stale heap entry (they pile up: each lease and TTL leaves one).

        Invisible to decisions, which skip stale entries anyway; keeps the heap and
        checkpoints from growing with them. Returns how many were dropped. Not for use
        inside a unit of work.
        """
        before = len(self.deadlines)
        self.deadlines = [e for e in self.deadlines if self.deadline_is_live(e)]
        heapq.heapify(self.deadlines)
        return before - len(self.deadlines)

    def pop_due(self, now: datetime) -> list[Deadline]:
        """Take every live deadline due at ``now`` off the heap (undone on rollback)."""
        cutoff = now.timestamp()
        due: list[Deadline] = []
        while self.deadlines and self.deadlines[0][0] <= cutoff:
            entry = heapq.heappop(self.deadlines)
            # Stale entries are kept for undo too: a rollback can make them live again.
            if self.undo is not None:
                self.undo.steps += (self.deadlines, "popped", entry)
            if self.deadline_is_live(entry):
                due.append(entry)
        return due

    def deadline_is_live(self, entry: Deadline) -> bool:
        """Whether a heap entry still describes a pending deadline."""
        when, _, kind, task_id, generation = entry
        if kind == "timer":
            timer = self.timers.get(task_id)
            return timer is not None and timer.fires_at.timestamp() == when
        task = self.tasks.get(task_id)
        if task is None:
            return False
        if task.generation != generation:
            return False
        if kind == "complete_by":
            return task.state == "assigned"
        if kind == "lease":
            return (
                task.state == "assigned"
                and task.lease_expires_at is not None
                and task.lease_expires_at.timestamp() == when
            )
        if kind == "not_before":
            return (
                task.state == "queued"
                and task.not_before is not None
                and task.not_before.timestamp() == when
            )
        if kind == "ttl":
            return (
                task.state == "queued"
                and task.route_tier != "trivial"  # trivial tasks have no TTL
                and task.queued_at.timestamp() + self.task_ttl_s == when
            )
        if kind == "deadline":  # a queued task's complete_by (any tier)
            return (
                task.state == "queued"
                and task.complete_by is not None
                and task.complete_by.timestamp() == when
            )
        return False

    def version_of_agent(self, agent_id: str) -> int:
        """The agent aggregate's current version (0 if never registered)."""
        agent = self.agents.get(agent_id)
        return agent.version if agent else 0

    def version_of_endpoint(self, endpoint_id: str) -> int:
        """The endpoint aggregate's current version (0 if never registered)."""
        endpoint = self.endpoints.get(endpoint_id)
        return endpoint.version if endpoint else 0

    # --- folding --------------------------------------------------------------------

    def apply(self, event: ev.DomainEvent, position: int) -> None:
        """Fold one event, recorded at global ``position``, into the state."""
        self._handlers[type(event)](event, position)
        # Not in the undo log: a unit of work's events take consecutive positions from
        # its first, so it puts the position back itself (one step per batch, not one
        # per event).
        self.position = position
        if self.settled:
            self._let_settled_go(event.timestamp.timestamp())

    def _put_task(self, task: TaskRecord) -> None:
        self._set(self.tasks, task.task_id, task)

    def _evolve_task(self, e: ev.DomainEvent, position: int) -> tuple[TaskRecord, TaskRecord]:
        """The task before and after ``e``; the new record is stored."""
        tasks = self.tasks
        held = tasks.get(e.originator_id)
        old = held or self.recalled[("task", e.originator_id)]
        new = _TASK[type(e)](old, e, position)
        if self.undo is not None:  # ``_set`` with the old value already in hand
            self.undo.steps += (tasks, new.task_id, MISSING if held is None else held)
        tasks[new.task_id] = new
        return old, new

    def _release_agent(
        self,
        task: TaskRecord,
        position: int,
        at: datetime | None = None,
        cancelled: tuple[UUID, int] | None = None,
    ) -> None:
        if task.assigned_to is None:
            return
        agent = self.agents.get(task.assigned_to)
        if agent is None or agent.task_id != task.task_id:
            return
        free = agent.status == "busy"
        self._set(self.agents, agent.agent_id, agent_aggregate.released(agent, at, cancelled))
        if free:
            self._idle_add(agent, position)

    def _idle_add(self, agent: AgentRecord, position: int) -> None:
        self._set(self.idle_agents, agent.agent_id, position)
        self._sorted_add(self.idle_order, (position, agent.agent_id))
        host = host_of(agent.ollama_host)
        if host is not None:
            if host not in self.idle_by_host:
                self._set(self.idle_by_host, host, SortedList())
            self._sorted_add(self.idle_by_host[host], (position, agent.agent_id))

    def _idle_remove(self, agent: AgentRecord) -> None:
        since = self.idle_agents.get(agent.agent_id)
        if since is None:
            return
        self._discard(self.idle_agents, agent.agent_id)
        self._sorted_remove(self.idle_order, (since, agent.agent_id))
        host = host_of(agent.ollama_host)
        if host is not None and host in self.idle_by_host:
            self._sorted_remove(self.idle_by_host[host], (since, agent.agent_id))

    def _enqueue(self, task: TaskRecord) -> None:
        self._queue_add(task)
        self._push_deadline_ttl(task)
        self._push_deadline_queued(task)

    def _push_deadline_queued(self, task: TaskRecord) -> None:
        """A queued task's ``complete_by``: when it passes, the task is dead-lettered."""
        if task.complete_by is not None:
            self._push_deadline(task.complete_by, "deadline", task.task_id, task.generation)

    def _push_deadline_ttl(self, task: TaskRecord) -> None:
        due = task.queued_at.timestamp() + self.task_ttl_s
        self._deadline_counter += 1
        entry = (due, self._deadline_counter, "ttl", task.task_id, task.generation)
        heapq.heappush(self.deadlines, entry)

    # --- Task events: the record evolves, then the queue and deadlines follow ----------

    def _task_submitted(self, e: ev.TaskSubmitted, position: int) -> None:
        task = _TASK[ev.TaskSubmitted](None, e, position)
        # It joins the queue when classified (the next event, always in the same
        # append): its tier decides which tier's line it stands in.
        self._put_task(task)
        self._push_deadline_ttl(task)
        self._push_deadline_queued(task)

    def _task_classified(self, e: ev.TaskClassified, position: int) -> None:
        old, new = self._evolve_task(e, position)
        if old.classification_reason == "" and old.state == "queued":
            self._queue_add(new)
        else:
            self._move_queued(old, new)

    def _move_queued(self, old: TaskRecord, new: TaskRecord) -> None:
        """Move a queued task's entry if its effective tier changed."""
        if old.state == "queued" and old.effective_tier != new.effective_tier:
            self._queue_remove(old)
            self._queue_add(new)

    def _task_evolved(self, e: ev.DomainEvent, position: int) -> None:
        """Routed: only the record changes."""
        self._evolve_task(e, position)

    def _task_assigned(self, e: ev.TaskAssigned, position: int) -> None:
        old, task = self._evolve_task(e, position)
        self._queue_remove(old)
        self._push_deadline(e.lease_expires_at, "lease", task.task_id, e.generation)
        if task.complete_by is not None:
            self._push_deadline(task.complete_by, "complete_by", task.task_id, e.generation)

    def _task_heartbeated(self, e: ev.TaskHeartbeated, position: int) -> None:
        self._evolve_task(e, position)
        self._push_deadline(e.lease_expires_at, "lease", e.originator_id, e.generation)

    def _task_left_agent(self, e: ev.DomainEvent, position: int) -> None:
        """Failed, reclaimed (and completed): the agent that held it is free again."""
        old, _ = self._evolve_task(e, position)
        self._release_agent(old, position, e.timestamp)

    def _task_completed(self, e: ev.TaskCompleted, position: int) -> None:
        self._task_left_agent(e, position)
        if not self.keep_finished:
            self._drop_finished(e.originator_id)
        else:
            self._settle(e.timestamp, "task", e.originator_id, e.originator_version)

    def _task_escalated(self, e: ev.TaskEscalated, position: int) -> None:
        self._move_queued(*self._evolve_task(e, position))

    def _task_deescalated(self, e: ev.TaskDeescalated, position: int) -> None:
        self._move_queued(*self._evolve_task(e, position))

    def _task_back_in_queue(self, e: ev.DomainEvent, position: int) -> None:
        """Requeued or retried (after a failure, not before its backoff: a deadline
        wakes the scheduler then)."""
        task = self._evolve_task(e, position)[1]
        self._enqueue(task)
        if task.not_before is not None:
            self._push_deadline(task.not_before, "not_before", task.task_id, task.generation)

    def _task_dead_lettered(self, e: ev.TaskDeadLettered, position: int) -> None:
        old, _ = self._evolve_task(e, position)
        self._queue_remove(old)
        self._release_agent(old, position, e.timestamp)
        self._settle(e.timestamp, "task", e.originator_id, e.originator_version)

    def _task_cancelled(self, e: ev.TaskCancelled, position: int) -> None:
        old, _ = self._evolve_task(e, position)
        self._queue_remove(old)
        if e.agent_id is not None and e.generation is not None:
            # A running task was cancelled: its agent is free, and remembers why.
            self._release_agent(old, position, e.timestamp, (e.originator_id, e.generation))
        if not self.keep_finished:
            self._drop_finished(e.originator_id)
        else:
            self._settle(e.timestamp, "task", e.originator_id, e.originator_version)

    def _drop_finished(self, task_id: UUID) -> None:
        task = self.tasks[task_id]
        self._discard(self.tasks, task_id)
        key = (task.state, task.effective_tier)
        self._set(self.finished_counts, key, self.finished_counts.get(key, 0) + 1)

    # --- Scheduler events: the record, the pending timers and their deadlines ----------

    def _scheduler_evolved(self, e: ev.DomainEvent, position: int) -> None:
        self._set_scalar("scheduler", scheduler_aggregate.evolve(self.scheduler, e, position))

    def _timer_started(self, e: ev.FallbackTimerStarted, position: int) -> None:
        timer = scheduler_aggregate.timer_after(e)
        assert timer is not None
        self._set(self.timers, e.task_id, timer)
        self._timer_changed(e.task_id)
        self._scheduler_evolved(e, position)
        self._push_deadline(e.fires_at, "timer", e.task_id, 0)

    def _timer_ended(
        self, e: ev.FallbackTimerFired | ev.FallbackTimerCancelled, position: int
    ) -> None:
        self._discard(self.timers, e.task_id)
        self._timer_changed(e.task_id)
        self._scheduler_evolved(e, position)

    # --- Agent events: the record, the idle line and the token digests -----------------

    def _agent_registered(self, e: ev.AgentRegistered, position: int) -> None:
        old = self.agents.get(e.agent_id)
        agent = agent_aggregate.evolve(old, e)
        if old is not None:
            self._idle_remove(old)
            if old.token_sha256 is not None:
                self._discard(self.agent_tokens, old.token_sha256)
        if e.token_sha256 is not None:
            self._set(self.agent_tokens, e.token_sha256, e.agent_id)
        self._set(self.agents, e.agent_id, agent)
        self._idle_add(agent, position)

    def _agent_not_idle(
        self, e: ev.AgentReserved | ev.AgentWentOffline | ev.AgentDeregistered, _: int
    ) -> None:
        """Reserved, went offline, deregistered: out of the idle line."""
        old = self.agents.get(e.agent_id) or self.recalled[("agent", e.agent_id)]
        new = _AGENT[type(e)](old, e)
        self._set(self.agents, e.agent_id, new)
        self._idle_remove(old)
        if new.status == "deregistered":
            self._settle(e.timestamp, "agent", e.agent_id, new.version)

    def _agent_came_back(self, e: ev.AgentCameBack, position: int) -> None:
        """Offline for silence, heard from again: idle, at the back of the line."""
        old = self.agents.get(e.agent_id) or self.recalled[("agent", e.agent_id)]
        agent = agent_aggregate.evolve(old, e)
        self._set(self.agents, e.agent_id, agent)
        self._idle_add(agent, position)

    # --- Endpoint events: the record, and the position of the endpoint state -----------

    def _endpoint_evolved(self, e: ev.DomainEvent, position: int) -> None:
        endpoint_id: str = e.endpoint_id  # type: ignore[attr-defined]
        endpoint = _ENDPOINT[type(e)](self.endpoint(endpoint_id), e, position)
        self._set(self.endpoints, endpoint_id, endpoint)
        self._set_scalar("endpoint_state_position", position)
        if endpoint.status == "deregistered":
            self._settle(e.timestamp, "endpoint", endpoint_id, endpoint.version)

    # --- comparison -----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """A plain, comparable picture of the state (for tests and audits)."""
        return {
            "position": self.position,
            "tasks": dict(self.tasks),
            "queue": list(self.queue),
            "queued_by_tier": {t: list(q) for t, q in self.queued_by_tier.items() if q},
            "untimed_by_tier": {t: list(q) for t, q in self.untimed_by_tier.items() if q},
            "escalated_by_tier": {t: list(q) for t, q in self.escalated_by_tier.items() if q},
            "timed_by_tier": {t: list(q) for t, q in self.timed_by_tier.items() if q},
            "queued_capabilities": dict(self.queued_capabilities),
            "agents": dict(self.agents),
            "idle_agents": dict(self.idle_agents),
            "idle_order": list(self.idle_order),
            "idle_by_host": {h: list(v) for h, v in self.idle_by_host.items() if v},
            "endpoints": dict(self.endpoints),
            "endpoint_state_position": self.endpoint_state_position,
            "timers": dict(self.timers),
            "scheduler": self.scheduler,
            "agent_tokens": dict(self.agent_tokens),
            "finished_counts": dict(self.finished_counts),
            "settled": list(self.settled),
        }
