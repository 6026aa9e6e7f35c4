"""The application service: commands that check invariants and decide events.

Every command takes ``now`` and a ``UnitOfWork``; it either raises a ``DomainError``
having emitted nothing, or emits its events. The imperative shell (the runtime)
owns the unit of work, appends its events and rolls it back on a lost race.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast
from uuid import UUID, uuid4

import msgspec

from tierlog.domain import events as ev
from tierlog.domain import validation as v
from tierlog.domain.classification import VALID_TIERS, classification_reason, classify, route_tier
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.errors import (
    InvalidTransitionError,
    NotFoundError,
    NotYourTaskError,
    StaleGenerationError,
    ValidationError,
)
from tierlog.domain.records import AgentRecord, EndpointRecord, TaskRecord
from tierlog.domain.scheduling import reclaim_task, run_pass
from tierlog.domain.state import SchedulerState
from tierlog.domain.unit_of_work import UnitOfWork


class SubmitResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a submission returns: the task, its state, and whether it is new."""

    task_id: UUID
    state: str
    created: bool


class SchedulerService:
    """Commands over a ``SchedulerState``; pure apart from the injected id factory."""

    def __init__(
        self,
        config: SchedulerConfig,
        state: SchedulerState | None = None,
        *,
        new_task_id: Callable[[], UUID] = uuid4,
        perf_ns: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self.config = config
        self.state = state if state is not None else SchedulerState(config.task_ttl_s)
        self.new_task_id = new_task_id
        self.perf_ns = perf_ns

    # --- tasks ----------------------------------------------------------------------

    def submit_task(
        self,
        uow: UnitOfWork,
        now: datetime,
        *,
        description: object,
        priority: object = "normal",
        needed_capabilities: object = None,
        complexity_tier: object = None,
        file_hints: object = None,
        verification_steps: object = None,
        success_criteria: object = None,
        repo: object = None,
        branch: object = None,
        metadata: object = None,
        max_retries: object = 3,
        complete_by: object = None,
        submitted_by: object = "unknown",
        idempotency_key: object = None,
    ) -> SubmitResult:
        """Submit a task; the same idempotency key returns the same task and appends nothing."""
        key = v.optional_text(idempotency_key, "idempotency_key", max_len=v.MAX_NAME)
        if key is not None and key in self.state.idempotency:
            existing = self.state.tasks[self.state.idempotency[key]]
            return SubmitResult(task_id=existing.task_id, state=existing.state, created=False)
        tier: ev.RequestedTier | None = None
        if complexity_tier is not None:
            tier = cast(ev.RequestedTier, v.choice(complexity_tier, "complexity_tier", VALID_TIERS))
        deadline = None
        if complete_by is not None:
            deadline = v.aware_datetime(complete_by, "complete_by")
            if deadline <= now:
                raise ValidationError("complete_by must be in the future", field="complete_by")
        fields: dict[str, Any] = {
            "description": v.text(description, "description"),
            "priority": v.choice(priority, "priority", ev.PRIORITIES),
            "needed_capabilities": v.strings(needed_capabilities, "needed_capabilities"),
            "requested_tier": tier,
            "file_hints": v.strings(file_hints, "file_hints"),
            "verification_steps": v.strings(verification_steps, "verification_steps"),
            "success_criteria": v.strings(success_criteria, "success_criteria"),
            "repo": v.optional_text(repo, "repo", max_len=v.MAX_NAME * 5),
            "branch": v.optional_text(branch, "branch", max_len=v.MAX_NAME * 5),
            "metadata": v.json_object(metadata, "metadata"),
            "max_retries": v.integer(max_retries, "max_retries", low=0, high=100),
            "complete_by": deadline,
            "submitted_by": v.text(submitted_by, "submitted_by", max_len=v.MAX_NAME),
            "idempotency_key": key,
        }
        task_id = ev.idempotent_task_id(key) if key is not None else self.new_task_id()
        if task_id in self.state.tasks:
            raise InvalidTransitionError(f"task {task_id} already exists", field="task_id")
        uow.task_event(ev.TaskSubmitted, task_id, now, **fields)
        classification = classify(
            fields["description"], fields["file_hints"], fields["verification_steps"], tier
        )
        uow.task_event(
            ev.TaskClassified,
            task_id,
            now,
            classification=classification,
            route_tier=route_tier(classification),
            reason=classification_reason(classification),
        )
        return SubmitResult(task_id=task_id, state="queued", created=True)

    def cancel_task(
        self,
        uow: UnitOfWork,
        now: datetime,
        *,
        task_id: object,
        requested_by: object = "unknown",
        reason: object = "cancelled",
    ) -> None:
        """Cancel a queued or dead-lettered task (and its pending timer)."""
        task = self._task(task_id)
        who = v.text(requested_by, "requested_by", max_len=v.MAX_NAME)
        why = v.text(reason, "reason", max_len=v.MAX_NAME * 5)
        if task.state not in ("queued", "dead_lettered"):
            raise InvalidTransitionError(
                f"task {task.task_id} is {task.state}; only queued or dead-lettered tasks "
                "can be cancelled",
                field="task_id",
            )
        uow.task_event(ev.TaskCancelled, task.task_id, now, reason=why, requested_by=who)
        if task.task_id in self.state.timers:
            uow.scheduler_event(
                ev.FallbackTimerCancelled, now, task_id=task.task_id, reason="cancelled"
            )

    def retry_task(
        self, uow: UnitOfWork, now: datetime, *, task_id: object, requested_by: object = "unknown"
    ) -> int:
        """Put a dead-lettered task back in the queue with its retry count reset."""
        task = self._task(task_id)
        who = v.text(requested_by, "requested_by", max_len=v.MAX_NAME)
        if task.state != "dead_lettered":
            raise InvalidTransitionError(
                f"task {task.task_id} is {task.state}; only dead-lettered tasks can be retried",
                field="task_id",
            )
        generation = task.generation + 1
        deadline = task.complete_by if task.complete_by and task.complete_by > now else None
        uow.task_event(
            ev.TaskRetried,
            task.task_id,
            now,
            generation=generation,
            requested_by=who,
            complete_by=deadline,
        )
        return generation

    def heartbeat(
        self,
        uow: UnitOfWork,
        now: datetime,
        *,
        agent_id: object,
        task_id: object,
        generation: object,
    ) -> datetime:
        """Extend the lease of the agent's current task; returns the new expiry."""
        task = self._held_task(agent_id, task_id, generation)
        if task.lease_expires_at is not None and task.lease_expires_at <= now:
            raise StaleGenerationError(
                f"the lease on task {task.task_id} expired at "
                f"{task.lease_expires_at.isoformat()}; it is being reclaimed",
                field="generation",
            )
        lease = now + timedelta(seconds=self.config.lease_s)
        uow.task_event(
            ev.TaskHeartbeated,
            task.task_id,
            now,
            agent_id=task.assigned_to,
            generation=task.generation,
            lease_expires_at=lease,
        )
        return lease

    def complete_task(
        self,
        uow: UnitOfWork,
        now: datetime,
        *,
        agent_id: object,
        task_id: object,
        generation: object,
        result: object = None,
    ) -> None:
        """Record that the agent finished its task."""
        payload = v.json_value(result, "result")
        task = self._held_task(agent_id, task_id, generation)
        uow.task_event(
            ev.TaskCompleted,
            task.task_id,
            now,
            agent_id=task.assigned_to,
            generation=task.generation,
            result=payload,
        )

    def fail_task(
        self,
        uow: UnitOfWork,
        now: datetime,
        *,
        agent_id: object,
        task_id: object,
        generation: object,
        error: object,
    ) -> str:
        """Record a failure: requeue while retries remain, else dead-letter. Returns the state."""
        message = v.text(error, "error")
        task = self._held_task(agent_id, task_id, generation)
        failures = task.retry_count + 1
        uow.task_event(
            ev.TaskFailed,
            task.task_id,
            now,
            agent_id=task.assigned_to,
            generation=task.generation,
            error=message,
            retry_count=failures,
        )
        if failures >= task.max_retries:
            uow.task_event(ev.TaskDeadLettered, task.task_id, now, reason="max_retries_exhausted")
            return "dead_lettered"
        uow.task_event(
            ev.TaskRequeued, task.task_id, now, generation=task.generation + 1, reason="failed"
        )
        return "queued"

    # --- agents ---------------------------------------------------------------------

    def register_agent(
        self,
        uow: UnitOfWork,
        now: datetime,
        *,
        agent_id: object,
        capabilities: object = None,
        ollama_host: object = None,
        token_sha256: str | None = None,
    ) -> None:
        """Register an agent (or re-register one that is idle, offline or gone).

        ``token_sha256`` is the digest of the bearer token the HTTP edge issued; a
        re-registration replaces the old token.
        """
        name = v.name(agent_id, "agent_id")
        caps = v.strings(capabilities, "capabilities")
        host = v.optional_text(ollama_host, "ollama_host", max_len=v.MAX_NAME)
        existing = self.state.agents.get(name)
        if existing is not None and existing.status == "busy":
            raise InvalidTransitionError(
                f"agent {name} holds task {existing.task_id}; it cannot re-register now",
                field="agent_id",
            )
        uow.agent_event(
            ev.AgentRegistered,
            name,
            now,
            capabilities=tuple(sorted(set(caps))),
            ollama_host=host,
            token_sha256=token_sha256,
        )

    def deregister_agent(self, uow: UnitOfWork, now: datetime, *, agent_id: object) -> None:
        """Remove an agent; a task it held is reclaimed with reason ``agent_gone``."""
        agent = self._live_agent(agent_id)
        self._reclaim_from(uow, agent, now)
        uow.agent_event(ev.AgentDeregistered, agent.agent_id, now)

    def mark_agent_offline(
        self, uow: UnitOfWork, now: datetime, *, agent_id: object, reason: object = "operator"
    ) -> None:
        """Mark an agent offline; a task it held is reclaimed with reason ``agent_gone``."""
        why = v.text(reason, "reason", max_len=v.MAX_NAME)
        agent = self._live_agent(agent_id)
        if agent.status == "offline":
            raise InvalidTransitionError(
                f"agent {agent.agent_id} is already offline", field="agent_id"
            )
        self._reclaim_from(uow, agent, now)
        uow.agent_event(ev.AgentWentOffline, agent.agent_id, now, reason=why)

    def _reclaim_from(self, uow: UnitOfWork, agent: AgentRecord, now: datetime) -> None:
        if agent.status == "busy" and agent.task_id is not None:
            reclaim_task(uow, self.state.tasks[agent.task_id], "agent_gone", now)

    # --- endpoints ------------------------------------------------------------------

    def register_endpoint(
        self,
        uow: UnitOfWork,
        now: datetime,
        *,
        host: object,
        port: object = 11434,
        models: object = None,
    ) -> str:
        """Register (or update) an endpoint; its id is ``host:port``."""
        name = v.name(host, "host")
        number = v.integer(port, "port", low=1, high=65535)
        served = v.strings(models, "models")
        endpoint_id = f"{name}:{number}"
        uow.endpoint_event(
            ev.EndpointRegistered, endpoint_id, now, host=name, port=number, models=served
        )
        return endpoint_id

    def report_health(
        self,
        uow: UnitOfWork,
        now: datetime,
        *,
        endpoint_id: object,
        ok: object,
        models: object = None,
    ) -> str:
        """Record a health check: healthy at once on success, unhealthy after N failures."""
        endpoint = self._endpoint(endpoint_id)
        if not isinstance(ok, bool):
            raise ValidationError("ok must be true or false", field="ok")
        served = None if models is None else v.strings(models, "models")
        if (
            ok
            and endpoint.status == "healthy"
            and endpoint.consecutive_failures == 0
            and (served is None or served == endpoint.models)
        ):
            return "healthy"  # nothing changed, so nothing is appended (SPEC §1.7)
        failures = 0 if ok else endpoint.consecutive_failures + 1
        status = endpoint.status
        if ok:
            status = "healthy"
        elif failures >= self.config.health_failures_to_unhealthy:
            status = "unhealthy"
        uow.endpoint_event(
            ev.EndpointHealthReported,
            endpoint.endpoint_id,
            now,
            ok=ok,
            models=served,
            status=status,
            consecutive_failures=failures,
        )
        return status

    def report_resources(
        self,
        uow: UnitOfWork,
        now: datetime,
        *,
        endpoint_id: object,
        cpu_percent: object = None,
        ram_used_bytes: object = None,
        ram_total_bytes: object = None,
        vram_used_bytes: object = None,
        vram_total_bytes: object = None,
        repo: object = None,
    ) -> None:
        """Record an endpoint's resource usage."""
        endpoint = self._endpoint(endpoint_id)
        uow.endpoint_event(
            ev.EndpointResourcesReported,
            endpoint.endpoint_id,
            now,
            cpu_percent=v.optional_number(cpu_percent, "cpu_percent", high=100.0),
            ram_used_bytes=v.optional_count(ram_used_bytes, "ram_used_bytes"),
            ram_total_bytes=v.optional_count(ram_total_bytes, "ram_total_bytes"),
            vram_used_bytes=v.optional_count(vram_used_bytes, "vram_used_bytes"),
            vram_total_bytes=v.optional_count(vram_total_bytes, "vram_total_bytes"),
            repo=v.optional_text(repo, "repo", max_len=v.MAX_NAME * 5),
        )

    def deregister_endpoint(self, uow: UnitOfWork, now: datetime, *, endpoint_id: object) -> None:
        """Remove an endpoint from routing."""
        endpoint = self._endpoint(endpoint_id)
        uow.endpoint_event(ev.EndpointDeregistered, endpoint.endpoint_id, now)

    def record_config(self, uow: UnitOfWork, now: datetime) -> bool:
        """Record this service's configuration unless it is the last one recorded."""
        if self.state.config == self.config:
            return False
        uow.scheduler_event(ev.SchedulerConfigured, now, config=self.config)
        return True

    # --- scheduling -----------------------------------------------------------------

    def schedule(self, uow: UnitOfWork, now: datetime) -> int:
        """Run scheduling passes until one decides nothing; returns the events emitted."""
        before = len(uow.events)
        for _ in range(16):
            if not run_pass(uow, self.config, now, self.perf_ns):
                break
        return len(uow.events) - before

    # --- lookups --------------------------------------------------------------------

    def _task(self, task_id: object) -> TaskRecord:
        if isinstance(task_id, str):
            try:
                task_id = UUID(task_id)
            except ValueError:
                raise ValidationError("task_id must be a UUID", field="task_id") from None
        if not isinstance(task_id, UUID):
            raise ValidationError("task_id must be a UUID", field="task_id")
        task = self.state.tasks.get(task_id)
        if task is None:
            raise NotFoundError(f"no task {task_id}", field="task_id")
        return task

    def _held_task(self, agent_id: object, task_id: object, generation: object) -> TaskRecord:
        name = v.name(agent_id, "agent_id")
        gen = v.integer(generation, "generation", low=0, high=2**62)
        task = self._task(task_id)
        if name not in self.state.agents:
            raise NotFoundError(f"no agent {name}", field="agent_id")
        if gen != task.generation:
            raise StaleGenerationError(
                f"generation {gen} of task {task.task_id} is stale: not the current one",
                field="generation",
            )
        if task.state != "assigned":
            raise InvalidTransitionError(
                f"task {task.task_id} is {task.state}, not assigned", field="task_id"
            )
        if task.assigned_to != name:
            raise NotYourTaskError(
                f"task {task.task_id} is assigned to another agent", field="agent_id"
            )
        return task

    def _live_agent(self, agent_id: object) -> AgentRecord:
        name = v.name(agent_id, "agent_id")
        agent = self.state.agents.get(name)
        if agent is None or agent.status == "deregistered":
            raise NotFoundError(f"no registered agent {name}", field="agent_id")
        return agent

    def _endpoint(self, endpoint_id: object) -> EndpointRecord:
        name = v.name(endpoint_id, "endpoint_id")
        endpoint = self.state.endpoints.get(name)
        if endpoint is None or endpoint.status == "deregistered":
            raise NotFoundError(f"no registered endpoint {name}", field="endpoint_id")
        return endpoint
