"""The application service: one handler per command, and the scheduling pass after them.

``SchedulerService.handle(command, uow, now)`` looks the command's handler up in one
table. A handler finds the aggregates the command names, lets each decide (the
decisions live in ``tierlog.domain.aggregates``) and emits their events through the
unit of work; it either raises a ``DomainError`` having emitted nothing, or emits its
events. ``handle_all`` runs a batch (each command's failure taken back alone) and
``schedule`` the passes after it; the runtime's writer is the one place that runs them
in a unit of work and appends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Any
from uuid import UUID, uuid4

import msgspec

from tierlog.domain import commands as cmd
from tierlog.domain.aggregates import agent as agents
from tierlog.domain.aggregates import endpoint as endpoints
from tierlog.domain.aggregates import scheduler as scheduler
from tierlog.domain.aggregates import task as tasks
from tierlog.domain.aggregates.agent import AgentRecord
from tierlog.domain.aggregates.endpoint import EndpointRecord
from tierlog.domain.aggregates.task import TaskRecord
from tierlog.domain.backoff import RetryBackoff
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.errors import InvalidTransitionError, NotFoundError
from tierlog.domain.events import DomainEvent, idempotent_task_id
from tierlog.domain.limits import CommandLimits
from tierlog.domain.liveness import Presence
from tierlog.domain.scheduling import cancel_timer, reclaim_task, run_pass
from tierlog.domain.state import SchedulerState
from tierlog.domain.submissions import check_same_submission
from tierlog.domain.unit_of_work import UnitOfWork

MAX_PASSES = 16


class SubmitResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a submission returns: the task, its state, and whether it is new."""

    task_id: UUID
    state: str
    created: bool


Handler = Callable[[Any, UnitOfWork, datetime], Any]
EventCheck = Callable[[Sequence[DomainEvent]], None]


class SchedulerService:
    """Commands over a ``SchedulerState``; pure apart from the injected id factory.

    Every command is checked against ``limits`` before it is decided, and the events it
    emitted are handed to ``check_events`` (the store's own check, injected) while it
    can still be refused alone: a value the log could not carry fails its command, not
    the batch.
    """

    def __init__(
        self,
        config: SchedulerConfig,
        state: SchedulerState | None = None,
        *,
        new_task_id: Callable[[], UUID] = uuid4,
        perf_ns: Callable[[], int] = time.perf_counter_ns,
        limits: CommandLimits | None = None,
        check_events: EventCheck | None = None,
    ) -> None:
        self.config = config
        self.limits = limits if limits is not None else CommandLimits()
        self.check_events = check_events
        self.state = state if state is not None else SchedulerState(config.task_ttl_s)
        self.new_task_id = new_task_id
        self.perf_ns = perf_ns
        self.presence = Presence()
        """When this process last heard from each agent (polls): liveness reads it."""
        self._handlers: dict[type[cmd.Command], Handler] = {
            cmd.SubmitTask: self._submit_task,
            cmd.CancelTask: self._cancel_task,
            cmd.RetryTask: self._retry_task,
            cmd.HeartbeatTask: self._heartbeat,
            cmd.CompleteTask: self._complete_task,
            cmd.FailTask: self._fail_task,
            cmd.RegisterAgent: self._register_agent,
            cmd.DeregisterAgent: self._deregister_agent,
            cmd.MarkAgentOffline: self._mark_agent_offline,
            cmd.CheckInAgent: self._check_in_agent,
            cmd.RegisterEndpoint: self._register_endpoint,
            cmd.ReportHealth: self._report_health,
            cmd.ReportResources: self._report_resources,
            cmd.DeregisterEndpoint: self._deregister_endpoint,
            cmd.RecordConfiguration: self._record_configuration,
            cmd.RecordLeaderElection: self._record_leader_election,
            cmd.RunSchedulingPass: lambda command, uow, now: None,
        }

    def handle(self, command: cmd.Command, uow: UnitOfWork, now: datetime) -> Any:
        """Decide one command: emit its events, or raise its ``DomainError`` (a value
        past ``limits`` is a ``ValidationError`` naming the field and the limit)."""
        handler = self._handlers.get(type(command))
        if handler is None:
            handler = self._handler_of_base(type(command))
        command.check_limits(self.limits)
        emitted = len(uow.events)
        result = handler(command, uow, now)
        if self.check_events is not None and len(uow.events) > emitted:
            self.check_events(uow.events[emitted:])
        return result

    def _handler_of_base(self, command_type: type[cmd.Command]) -> Handler:
        # An HTTP body class derived from a command is handled as that command.
        for base in command_type.__mro__[1:]:
            if base in self._handlers:
                self._handlers[command_type] = self._handlers[base]
                return self._handlers[base]
        raise TypeError(f"no handler for {command_type.__name__}")

    def handle_all(
        self, uow: UnitOfWork, commands: Sequence[cmd.Command], now: datetime
    ) -> list[Any]:
        """Every command in order: each one's result, or the error it failed with (a
        ``DomainError``, or a ``TierlogError`` for a fault inside tierlog) with its events
        taken back (the others stand)."""
        return [
            uow.attempt(partial(self.handle, command, uow, now), command.verb)
            for command in commands
        ]

    def schedule(self, uow: UnitOfWork, now: datetime) -> int:
        """Run scheduling passes until one decides nothing; returns the events emitted."""
        before = len(uow.events)
        for _ in range(MAX_PASSES):
            if not run_pass(uow, self.config, now, self.perf_ns, self.presence):
                break
        return len(uow.events) - before

    # --- tasks ----------------------------------------------------------------------

    def _submit_task(self, command: cmd.SubmitTask, uow: UnitOfWork, now: datetime) -> SubmitResult:
        key = command.idempotency_key
        # A key names its task (``idempotent_task_id``), so the same key finds the same
        # task, in memory or handed back from the store after it left.
        task_id = idempotent_task_id(key) if key is not None else self.new_task_id()
        existing = self.state.task(task_id)
        if existing is not None:
            if key is not None:
                check_same_submission(existing, command, now)
                return SubmitResult(task_id=existing.task_id, state=existing.state, created=False)
            raise InvalidTransitionError(f"task {task_id} already exists", field="task_id")
        uow.emit(*tasks.submit(command, task_id, now))
        return SubmitResult(task_id=task_id, state="queued", created=True)

    def _cancel_task(self, command: cmd.CancelTask, uow: UnitOfWork, now: datetime) -> None:
        uow.emit(tasks.cancel(self._task(command.task_id), command, now))
        cancel_timer(uow, command.task_id, "cancelled", now)

    def _retry_task(self, command: cmd.RetryTask, uow: UnitOfWork, now: datetime) -> int:
        retried = tasks.retry(self._task(command.task_id), command, now)
        uow.emit(retried)
        return retried.generation

    def _heartbeat(self, command: cmd.HeartbeatTask, uow: UnitOfWork, now: datetime) -> datetime:
        task = self._held_task(command.agent_id, command.task_id, command.generation)
        heartbeat = tasks.heartbeat(task, now, self.config.lease_s)
        uow.emit(heartbeat)
        return heartbeat.lease_expires_at

    def _complete_task(self, command: cmd.CompleteTask, uow: UnitOfWork, now: datetime) -> None:
        task = self._held_task(command.agent_id, command.task_id, command.generation)
        uow.emit(tasks.complete(task, command.result, now))

    def _fail_task(self, command: cmd.FailTask, uow: UnitOfWork, now: datetime) -> str:
        task = self._held_task(command.agent_id, command.task_id, command.generation)
        uow.emit(*tasks.fail(task, command.error, now, self._retry_backoff()))
        failed = self.state.task(task.task_id)
        assert failed is not None
        return failed.state

    # --- agents ---------------------------------------------------------------------

    def _register_agent(self, command: cmd.RegisterAgent, uow: UnitOfWork, now: datetime) -> None:
        uow.emit(agents.register(self.state.agent(command.agent_id), command, now))

    def _deregister_agent(
        self, command: cmd.DeregisterAgent, uow: UnitOfWork, now: datetime
    ) -> None:
        agent = agents.live(self.state.agent(command.agent_id), command.agent_id)
        deregistered = agents.deregister(agent, now)
        self.presence.forget(agent.agent_id)  # it polls no more: nothing to remember
        # Reclaiming its task frees the agent without an agent event: the version holds.
        self._reclaim_from(uow, agent, now)
        uow.emit(deregistered)

    def _mark_agent_offline(
        self, command: cmd.MarkAgentOffline, uow: UnitOfWork, now: datetime
    ) -> None:
        agent = agents.live(self.state.agent(command.agent_id), command.agent_id)
        offline = agents.mark_offline(agent, command.reason, now)
        self._reclaim_from(uow, agent, now)
        uow.emit(offline)

    def _check_in_agent(self, command: cmd.CheckInAgent, uow: UnitOfWork, now: datetime) -> bool:
        """The agent was heard from: back from a silence offline (True), else nothing."""
        agent = agents.live(self.state.agent(command.agent_id), command.agent_id)
        self.presence.heard(agent.agent_id, now)
        back = agents.check_in(agent, now)
        if back is None:
            return False
        uow.emit(back)
        return True

    def _retry_backoff(self) -> RetryBackoff:
        config = self.config
        return RetryBackoff(base_s=config.retry_backoff_s, max_s=config.retry_backoff_max_s)

    def _reclaim_from(self, uow: UnitOfWork, agent: AgentRecord, now: datetime) -> None:
        if agent.status == "busy" and agent.task_id is not None:
            reclaim_task(uow, self.state.tasks[agent.task_id], "agent_gone", now)

    # --- endpoints ------------------------------------------------------------------

    def _register_endpoint(
        self, command: cmd.RegisterEndpoint, uow: UnitOfWork, now: datetime
    ) -> str:
        endpoint_id = f"{command.host}:{command.port}"
        uow.emit(endpoints.register(self.state.endpoint(endpoint_id), command, now))
        return endpoint_id

    def _report_health(self, command: cmd.ReportHealth, uow: UnitOfWork, now: datetime) -> str:
        endpoint = self._endpoint(command.endpoint_id)
        failures_to_unhealthy = self.config.health_failures_to_unhealthy
        reported = endpoints.report_health(endpoint, command, now, failures_to_unhealthy)
        if reported is None:
            return endpoint.status  # nothing changed, so nothing is appended (SPEC §1.7)
        uow.emit(reported)
        return reported.status

    def _report_resources(
        self, command: cmd.ReportResources, uow: UnitOfWork, now: datetime
    ) -> None:
        uow.emit(endpoints.report_resources(self._endpoint(command.endpoint_id), command, now))

    def _deregister_endpoint(
        self, command: cmd.DeregisterEndpoint, uow: UnitOfWork, now: datetime
    ) -> None:
        uow.emit(endpoints.deregister(self._endpoint(command.endpoint_id), now))

    def _record_configuration(
        self, _: cmd.RecordConfiguration, uow: UnitOfWork, now: datetime
    ) -> bool:
        configured = scheduler.configure(self.state.scheduler, self.config, now)
        if configured is None:
            return False
        uow.emit(configured)
        return True

    def _record_leader_election(
        self, command: cmd.RecordLeaderElection, uow: UnitOfWork, now: datetime
    ) -> int:
        uow.emit(scheduler.elect_leader(self.state.scheduler, command.node_id, command.epoch, now))
        return command.epoch

    # --- lookups --------------------------------------------------------------------

    def _task(self, task_id: UUID) -> TaskRecord:
        task = self.state.task(task_id)
        if task is None:
            raise NotFoundError(f"no task {task_id}", field="task_id")
        return task

    def _held_task(self, agent_id: str, task_id: UUID, generation: int) -> TaskRecord:
        task = self._task(task_id)
        if self.state.agent(agent_id) is None:
            raise NotFoundError(f"no agent {agent_id}", field="agent_id")
        tasks.check_held(task, agent_id, generation)
        return task

    def _endpoint(self, endpoint_id: str) -> EndpointRecord:
        return endpoints.live(self.state.endpoint(endpoint_id), endpoint_id)
