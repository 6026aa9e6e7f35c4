"""The scheduler's state: a fold of every event in the log, with indexes and an undo log.

``SchedulerState.apply(event, position)`` is the only way state changes, so state
rebuilt from the log equals live state by construction. Deciders read the state;
the application service applies their events at once (so later decisions in the
same batch see them) inside a unit of work that can be rolled back if the append
loses a race.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

from msgspec.structs import replace
from sortedcontainers import SortedList

from tierlog.domain import events as ev
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.records import (
    AgentRecord,
    EndpointRecord,
    EndpointResources,
    PendingTimer,
    TaskRecord,
    host_of,
)

# (due timestamp, tie-break counter, kind, task id, generation)
Deadline = tuple[float, int, str, UUID, int]
_MISSING: Any = object()


class SchedulerState:
    """Everything the scheduler decides from, folded from the log."""

    def __init__(self, task_ttl_s: float = 600.0, *, keep_finished: bool = True) -> None:
        """An empty state. ``keep_finished=False`` is for looking at the past (time
        travel): a task is dropped when it completes or is cancelled (states nothing
        leaves) and only counted in ``finished_counts``, and idempotency keys are not
        kept, so memory follows the live tasks instead of the log's length. The
        scheduler itself keeps every task (late commands, idempotent submissions)."""
        self.task_ttl_s = task_ttl_s
        self.keep_finished = keep_finished
        # Tasks dropped when they finished, by (state, effective tier).
        self.finished_counts: dict[tuple[str, str], int] = {}
        self.position = 0
        self.tasks: dict[UUID, TaskRecord] = {}
        self.queue: SortedList = SortedList()
        # The same entries by effective tier: a pass with no idle agent visits only
        # the tiers that need a timer started.
        self.queued_by_tier: dict[str, SortedList] = {}
        self.agents: dict[str, AgentRecord] = {}
        # Idle agents, each with the log position at which it became idle: the longest
        # idle goes first, and positions make that order the same live and rebuilt.
        self.idle_agents: dict[str, int] = {}
        self.idle_order: SortedList = SortedList()
        # The same, per host of the agents' Ollama, for the ollama_host preference.
        self.idle_by_host: dict[str, SortedList] = {}
        self.endpoints: dict[str, EndpointRecord] = {}
        self.endpoint_state_position = 0
        self.timers: dict[UUID, PendingTimer] = {}
        self.scheduler_version = 0
        # The last recorded configuration and where it was recorded (0: none yet).
        self.config: SchedulerConfig | None = None
        self.config_position = 0
        self.idempotency: dict[str, UUID] = {}
        # Bearer token digests of registered agents, for the HTTP edge.
        self.agent_tokens: dict[str, str] = {}
        self.deadlines: list[Deadline] = []
        self._deadline_counter = 0
        self._undo: list[Any] | None = None
        self._handlers: dict[type[ev.DomainEvent], Callable[[Any, int], None]] = {
            ev.TaskSubmitted: self._task_submitted,
            ev.TaskClassified: self._task_classified,
            ev.TaskRouted: self._task_routed,
            ev.TaskAssigned: self._task_assigned,
            ev.TaskHeartbeated: self._task_heartbeated,
            ev.TaskCompleted: self._task_completed,
            ev.TaskFailed: self._task_failed,
            ev.TaskReclaimed: self._task_reclaimed,
            ev.TaskEscalated: self._task_escalated,
            ev.TaskRequeued: self._task_requeued,
            ev.TaskDeadLettered: self._task_dead_lettered,
            ev.TaskRetried: self._task_retried,
            ev.TaskCancelled: self._task_cancelled,
            ev.FallbackTimerStarted: self._timer_started,
            ev.FallbackTimerFired: self._timer_ended,
            ev.FallbackTimerCancelled: self._timer_ended,
            ev.SchedulerConfigured: self._configured,
            ev.AgentRegistered: self._agent_registered,
            ev.AgentReserved: self._agent_reserved,
            ev.AgentWentOffline: self._agent_left,
            ev.AgentDeregistered: self._agent_left,
            ev.EndpointRegistered: self._endpoint_registered,
            ev.EndpointHealthReported: self._endpoint_health,
            ev.EndpointResourcesReported: self._endpoint_resources,
            ev.EndpointDeregistered: self._endpoint_deregistered,
        }

    # --- unit of work ---------------------------------------------------------------

    def begin(self) -> None:
        """Start recording undo steps; changes until ``commit`` can be rolled back."""
        self._undo = []

    def savepoint(self) -> int:
        """A mark to roll back to if one command of a batch fails."""
        return len(self._undo) if self._undo is not None else 0

    def rollback(self, savepoint: int = 0) -> None:
        """Undo every change made since ``savepoint`` (or since ``begin``)."""
        undo = self._undo
        if undo is None:
            return
        # Undo steps are flat triples (target, key, old value), newest last. Flat
        # triples rather than closures: no allocation per step, so no GC pressure.
        while len(undo) > savepoint:
            old = undo.pop()
            key = undo.pop()
            target = undo.pop()
            if target is self:
                setattr(self, key, old)
            elif isinstance(target, SortedList):
                if key == "added":
                    target.discard(old)
                else:
                    target.add(old)
            elif target is self.deadlines:
                heapq.heappush(self.deadlines, old)
            elif old is _MISSING:
                target.pop(key, None)
            else:
                target[key] = old

    def commit(self) -> None:
        """Keep the changes and stop recording undo steps."""
        self._undo = None

    def _set(self, mapping: dict[Any, Any], key: Any, value: Any) -> None:
        undo = self._undo
        if undo is not None:
            undo += (mapping, key, mapping.get(key, _MISSING))
        mapping[key] = value

    def _discard(self, mapping: dict[Any, Any], key: Any) -> None:
        # A restored idle agent goes to the back of the line: idle order is a
        # preference between equally fit agents, not a rule, so that is harmless.
        old = mapping.pop(key, _MISSING)
        if old is not _MISSING and self._undo is not None:
            self._undo += (mapping, key, old)

    def _set_scalar(self, name: str, value: Any) -> None:
        if self._undo is not None:
            self._undo += (self, name, getattr(self, name))
        setattr(self, name, value)

    def _sorted_add(self, target: SortedList, item: Any) -> None:
        target.add(item)
        if self._undo is not None:
            self._undo += (target, "added", item)

    def _sorted_remove(self, target: SortedList, item: Any) -> None:
        try:
            target.remove(item)  # one search, where "in" then remove would be two
        except ValueError:
            return
        if self._undo is not None:
            self._undo += (target, "removed", item)

    def _queue_add(self, task: TaskRecord) -> None:
        key = (*task.queue_key, task.task_id)
        self._sorted_add(self.queue, key)
        tier = task.effective_tier
        if tier not in self.queued_by_tier:
            self._set(self.queued_by_tier, tier, SortedList())
        self._sorted_add(self.queued_by_tier[tier], key)

    def _queue_remove(self, task: TaskRecord) -> None:
        key = (*task.queue_key, task.task_id)
        self._sorted_remove(self.queue, key)
        by_tier = self.queued_by_tier.get(task.effective_tier)
        if by_tier is not None:
            self._sorted_remove(by_tier, key)

    def _put_queued_task(self, old: TaskRecord, new: TaskRecord) -> None:
        """Replace a task record, moving its queue entry if its effective tier changed."""
        moved = old.state == "queued" and old.effective_tier != new.effective_tier
        if moved:
            self._queue_remove(old)
        self._put_task(new)
        if moved:
            self._queue_add(new)

    def _push_deadline(self, when: datetime, kind: str, task_id: UUID, generation: int) -> None:
        # Pushes are not undone: entries are checked against state when they come due.
        self._deadline_counter += 1
        entry = (when.timestamp(), self._deadline_counter, kind, task_id, generation)
        heapq.heappush(self.deadlines, entry)

    # --- reading --------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest live deadline (a POSIX timestamp), dropping stale ones."""
        while self.deadlines:
            entry = self.deadlines[0]
            if self.deadline_is_live(entry):
                return entry[0]
            heapq.heappop(self.deadlines)
        return None

    def compact_deadlines(self) -> int:
        """Drop every stale heap entry (they pile up: each lease and TTL leaves one).

        Invisible to decisions, which skip stale entries anyway; makes checkpoints small.
        Returns how many were dropped. Not for use inside a unit of work.
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
            if self._undo is not None:
                self._undo += (self.deadlines, "popped", entry)
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
        if kind == "ttl":
            return (
                task.state == "queued"
                and task.route_tier != "trivial"  # trivial tasks have no TTL
                and task.queued_at.timestamp() + self.task_ttl_s == when
            )
        return False

    def queued_tasks(self, tier: str | None = None) -> Iterator[TaskRecord]:
        """Queued tasks (of one effective tier, if given) in queue order.

        A snapshot: safe to change the queue meanwhile.
        """
        tasks = self.tasks
        source = self.queue if tier is None else self.queued_by_tier.get(tier, ())
        for _, _, task_id in list(source):
            yield tasks[task_id]

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
        self._set_scalar("position", position)

    def _put_task(self, task: TaskRecord) -> None:
        self._set(self.tasks, task.task_id, task)

    def _release_agent(self, task: TaskRecord, position: int) -> None:
        if task.assigned_to is None:
            return
        agent = self.agents.get(task.assigned_to)
        if agent is None or agent.task_id != task.task_id:
            return
        free = agent.status == "busy"
        self._set(
            self.agents,
            agent.agent_id,
            replace(agent, status="idle" if free else agent.status, task_id=None, generation=None),
        )
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
        self._put_task(task)
        self._queue_add(task)
        self._push_deadline_ttl(task)

    def _push_deadline_ttl(self, task: TaskRecord) -> None:
        due = task.queued_at.timestamp() + self.task_ttl_s
        self._deadline_counter += 1
        entry = (due, self._deadline_counter, "ttl", task.task_id, task.generation)
        heapq.heappush(self.deadlines, entry)

    def _task_submitted(self, e: ev.TaskSubmitted, position: int) -> None:
        task = TaskRecord(
            task_id=e.originator_id,
            version=e.originator_version,
            position=position,
            priority=e.priority,
            needed_capabilities=e.needed_capabilities,
            repo=e.repo,
            route_tier="standard",
            classification_reason="",
            state="queued",
            generation=0,
            retry_count=0,
            max_retries=e.max_retries,
            submitted_at=e.timestamp,
            queued_at=e.timestamp,
            complete_by=e.complete_by,
        )
        # It joins the queue when classified (the next event, always in the same
        # append): its tier decides which tier's line it stands in.
        self._put_task(task)
        self._push_deadline_ttl(task)
        if e.idempotency_key is not None and self.keep_finished:
            self._set(self.idempotency, e.idempotency_key, e.originator_id)

    def _task_classified(self, e: ev.TaskClassified, _: int) -> None:
        task = self.tasks[e.originator_id]
        classified = replace(
            task,
            version=e.originator_version,
            route_tier=e.route_tier,
            classification_reason=e.reason,
        )
        if task.classification_reason == "" and task.state == "queued":
            self._put_task(classified)
            self._queue_add(classified)
        else:
            self._put_queued_task(task, classified)

    def _task_routed(self, e: ev.TaskRouted, _: int) -> None:
        task = self.tasks[e.originator_id]
        self._put_task(
            replace(
                task,
                version=e.originator_version,
                routing_decision=e.decision,
                routed_generation=e.generation,
            )
        )

    def _task_assigned(self, e: ev.TaskAssigned, _: int) -> None:
        task = self.tasks[e.originator_id]
        self._queue_remove(task)
        task = replace(
            task,
            version=e.originator_version,
            state="assigned",
            generation=e.generation,
            assigned_to=e.agent_id,
            lease_expires_at=e.lease_expires_at,
            routing_decision=e.decision,
        )
        self._put_task(task)
        self._push_deadline(e.lease_expires_at, "lease", task.task_id, e.generation)
        if task.complete_by is not None:
            self._push_deadline(task.complete_by, "complete_by", task.task_id, e.generation)

    def _task_heartbeated(self, e: ev.TaskHeartbeated, _: int) -> None:
        task = self.tasks[e.originator_id]
        self._put_task(
            replace(task, version=e.originator_version, lease_expires_at=e.lease_expires_at)
        )
        self._push_deadline(e.lease_expires_at, "lease", task.task_id, e.generation)

    def _task_completed(self, e: ev.TaskCompleted, position: int) -> None:
        task = self.tasks[e.originator_id]
        self._release_agent(task, position)
        self._put_task(
            replace(
                task,
                version=e.originator_version,
                state="completed",
                assigned_to=None,
                lease_expires_at=None,
            )
        )
        if not self.keep_finished:
            self._drop_finished(e.originator_id)

    def _task_failed(self, e: ev.TaskFailed, position: int) -> None:
        task = self.tasks[e.originator_id]
        self._release_agent(task, position)
        self._put_task(
            replace(
                task,
                version=e.originator_version,
                retry_count=e.retry_count,
                assigned_to=None,
                lease_expires_at=None,
            )
        )

    def _task_reclaimed(self, e: ev.TaskReclaimed, position: int) -> None:
        task = self.tasks[e.originator_id]
        self._release_agent(task, position)
        self._put_task(
            replace(task, version=e.originator_version, assigned_to=None, lease_expires_at=None)
        )

    def _task_escalated(self, e: ev.TaskEscalated, _: int) -> None:
        task = self.tasks[e.originator_id]
        self._put_queued_task(
            task,
            replace(
                task,
                version=e.originator_version,
                escalated_to=e.to_tier,
                fallback_reason=e.reason,
            ),
        )

    def _task_requeued(self, e: ev.TaskRequeued, _: int) -> None:
        task = self.tasks[e.originator_id]
        self._enqueue(
            replace(
                task,
                version=e.originator_version,
                state="queued",
                generation=e.generation,
                queued_at=e.timestamp,
            )
        )

    def _task_dead_lettered(self, e: ev.TaskDeadLettered, position: int) -> None:
        task = self.tasks[e.originator_id]
        self._queue_remove(task)
        self._release_agent(task, position)
        self._put_task(
            replace(
                task,
                version=e.originator_version,
                state="dead_lettered",
                assigned_to=None,
                lease_expires_at=None,
                dead_letter_reason=e.reason,
            )
        )

    def _task_retried(self, e: ev.TaskRetried, _: int) -> None:
        task = self.tasks[e.originator_id]
        self._enqueue(
            replace(
                task,
                version=e.originator_version,
                state="queued",
                generation=e.generation,
                retry_count=0,
                queued_at=e.timestamp,
                complete_by=e.complete_by,
                escalated_to=None,
                fallback_reason=None,
                dead_letter_reason=None,
            )
        )

    def _task_cancelled(self, e: ev.TaskCancelled, _: int) -> None:
        task = self.tasks[e.originator_id]
        self._queue_remove(task)
        self._put_task(replace(task, version=e.originator_version, state="cancelled"))
        if not self.keep_finished:
            self._drop_finished(e.originator_id)

    def _drop_finished(self, task_id: UUID) -> None:
        task = self.tasks[task_id]
        self._discard(self.tasks, task_id)
        key = (task.state, task.effective_tier)
        self._set(self.finished_counts, key, self.finished_counts.get(key, 0) + 1)

    def _timer_started(self, e: ev.FallbackTimerStarted, _: int) -> None:
        timer = PendingTimer(
            task_id=e.task_id,
            original_tier=e.original_tier,
            fallback_tier=e.fallback_tier,
            started_at=e.timestamp,
            fires_at=e.fires_at,
            reason=e.reason,
        )
        self._set(self.timers, e.task_id, timer)
        self._set_scalar("scheduler_version", e.originator_version)
        self._push_deadline(e.fires_at, "timer", e.task_id, 0)

    def _timer_ended(self, e: ev.FallbackTimerFired | ev.FallbackTimerCancelled, _: int) -> None:
        self._discard(self.timers, e.task_id)
        self._set_scalar("scheduler_version", e.originator_version)

    def _configured(self, e: ev.SchedulerConfigured, position: int) -> None:
        self._set_scalar("config", e.config)
        self._set_scalar("config_position", position)
        self._set_scalar("scheduler_version", e.originator_version)

    def _agent_registered(self, e: ev.AgentRegistered, position: int) -> None:
        agent = AgentRecord(
            agent_id=e.agent_id,
            version=e.originator_version,
            capabilities=frozenset(e.capabilities),
            ollama_host=e.ollama_host,
            status="idle",
            token_sha256=e.token_sha256,
        )
        old = self.agents.get(e.agent_id)
        if old is not None:
            self._idle_remove(old)
            if old.token_sha256 is not None:
                self._discard(self.agent_tokens, old.token_sha256)
        if e.token_sha256 is not None:
            self._set(self.agent_tokens, e.token_sha256, e.agent_id)
        self._set(self.agents, e.agent_id, agent)
        self._idle_add(agent, position)

    def _agent_reserved(self, e: ev.AgentReserved, _: int) -> None:
        agent = self.agents[e.agent_id]
        self._set(
            self.agents,
            e.agent_id,
            replace(
                agent,
                version=e.originator_version,
                status="busy",
                task_id=e.task_id,
                generation=e.generation,
            ),
        )
        self._idle_remove(agent)

    def _agent_left(self, e: ev.AgentWentOffline | ev.AgentDeregistered, _: int) -> None:
        agent = self.agents[e.agent_id]
        status = "offline" if isinstance(e, ev.AgentWentOffline) else "deregistered"
        self._set(
            self.agents,
            e.agent_id,
            replace(agent, version=e.originator_version, status=status),
        )
        self._idle_remove(agent)

    def _put_endpoint(self, endpoint: EndpointRecord, position: int) -> None:
        self._set(self.endpoints, endpoint.endpoint_id, endpoint)
        self._set_scalar("endpoint_state_position", position)

    def _endpoint_registered(self, e: ev.EndpointRegistered, position: int) -> None:
        old = self.endpoints.get(e.endpoint_id)
        if old is None:
            endpoint = EndpointRecord(
                endpoint_id=e.endpoint_id,
                version=e.originator_version,
                host=e.host,
                port=e.port,
                models=e.models,
                status="unknown",
                registration_order=position,
            )
        else:
            endpoint = replace(
                old,
                version=e.originator_version,
                host=e.host,
                port=e.port,
                models=e.models,
                status="unknown" if old.status == "deregistered" else old.status,
            )
        self._put_endpoint(endpoint, position)

    def _endpoint_health(self, e: ev.EndpointHealthReported, position: int) -> None:
        old = self.endpoints[e.endpoint_id]
        self._put_endpoint(
            replace(
                old,
                version=e.originator_version,
                status=e.status,
                consecutive_failures=e.consecutive_failures,
                models=e.models if e.models is not None else old.models,
            ),
            position,
        )

    def _endpoint_resources(self, e: ev.EndpointResourcesReported, position: int) -> None:
        old = self.endpoints[e.endpoint_id]
        resources = EndpointResources(
            cpu_percent=e.cpu_percent,
            ram_used_bytes=e.ram_used_bytes,
            ram_total_bytes=e.ram_total_bytes,
            vram_used_bytes=e.vram_used_bytes,
            vram_total_bytes=e.vram_total_bytes,
            repo=e.repo,
            reported_at=e.timestamp,
        )
        self._put_endpoint(
            replace(old, version=e.originator_version, resources=resources), position
        )

    def _endpoint_deregistered(self, e: ev.EndpointDeregistered, position: int) -> None:
        old = self.endpoints[e.endpoint_id]
        self._put_endpoint(
            replace(old, version=e.originator_version, status="deregistered"), position
        )

    # --- comparison -----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """A plain, comparable picture of the state (for tests and audits)."""
        return {
            "position": self.position,
            "tasks": dict(self.tasks),
            "queue": list(self.queue),
            "queued_by_tier": {t: list(q) for t, q in self.queued_by_tier.items() if q},
            "agents": dict(self.agents),
            "idle_agents": dict(self.idle_agents),
            "idle_order": list(self.idle_order),
            "idle_by_host": {h: list(v) for h, v in self.idle_by_host.items() if v},
            "endpoints": dict(self.endpoints),
            "endpoint_state_position": self.endpoint_state_position,
            "timers": dict(self.timers),
            "scheduler_version": self.scheduler_version,
            "config": self.config,
            "config_position": self.config_position,
            "idempotency": dict(self.idempotency),
            "agent_tokens": dict(self.agent_tokens),
            "finished_counts": dict(self.finished_counts),
        }
