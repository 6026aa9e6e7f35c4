"""The scheduling pass: deadlines that came due, then the queue in order.

A pass is a pure function of the state, the configuration and ``now`` (plus a
stopwatch for ``scoring_duration_us``); it emits events through the unit of work.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial
from uuid import UUID

from msgspec.structs import replace

from tierlog.domain import events as ev
from tierlog.domain.aggregates import agent as agents
from tierlog.domain.aggregates import scheduler
from tierlog.domain.aggregates import task as tasks
from tierlog.domain.aggregates.agent import AgentRecord
from tierlog.domain.aggregates.endpoint import EndpointRecord
from tierlog.domain.aggregates.task import TaskRecord, is_overdue
from tierlog.domain.backoff import is_backing_off
from tierlog.domain.config import SchedulerConfig, TierName
from tierlog.domain.liveness import Presence, mark_silent_offline
from tierlog.domain.recovery import follow_recovery
from tierlog.domain.routing import decide_route, has_candidate
from tierlog.domain.state import Deadline, SchedulerState
from tierlog.domain.unit_of_work import UnitOfWork

DEADLINE_PASSED = "deadline_passed"
"""Why a queued task whose ``complete_by`` passed was dead-lettered, and its timer ended."""


def reclaim_task(uow: UnitOfWork, task: TaskRecord, reason: str, now: datetime) -> None:
    """Take a task back from its agent and return it to the queue (SPEC §1.1, §1.6)."""
    uow.emit(*tasks.reclaim(task, reason, now))


def cancel_timer(uow: UnitOfWork, task_id: UUID, reason: str, now: datetime) -> None:
    """Cancel the task's pending fallback timer, if it has one."""
    if task_id in uow.state.timers:
        uow.emit(scheduler.cancel_timer(uow.state.scheduler, task_id, reason, now))


def _handle_deadline(
    uow: UnitOfWork,
    config: SchedulerConfig,
    entry: Deadline,
    now: datetime,
    perf_ns: Callable[[], int],
) -> None:
    state = uow.state
    _, _, kind, task_id, _ = entry
    if kind == "timer":
        _timer_due(uow, config, task_id, now, perf_ns)
        return
    task = state.tasks[task_id]
    if kind == "lease":
        agent_id = task.assigned_to
        reclaim_task(uow, task, "lease_expired", now)
        agent = state.agents.get(agent_id) if agent_id else None
        if agent is not None and agent.status == "idle":
            uow.emit(agents.go_offline(agent, "lease_expired", now))
    elif kind == "complete_by":
        reclaim_task(uow, task, "overdue", now)
    elif kind == "ttl":
        uow.emit(tasks.dead_letter(task, "ttl_expired", now))
        cancel_timer(uow, task.task_id, "dead_lettered", now)
    elif kind == "deadline":
        deadline_passed(uow, task, now)
    # "not_before": a retry's backoff is over; the queue part of this pass assigns it.


def deadline_passed(uow: UnitOfWork, task: TaskRecord, now: datetime) -> None:
    """A queued task's ``complete_by`` passed: it can no longer be assigned, so it is
    dead-lettered, and its pending timer (if any) is cancelled, with that reason."""
    uow.emit(tasks.dead_letter(task, DEADLINE_PASSED, now))
    cancel_timer(uow, task.task_id, DEADLINE_PASSED, now)


def _timer_due(
    uow: UnitOfWork,
    config: SchedulerConfig,
    task_id: UUID,
    now: datetime,
    perf_ns: Callable[[], int],
) -> None:
    """A fallback timer came due. A queued task whose deadline passed too (a pass that
    ran late, or a restart) is dead-lettered instead: no timer fires for a task that
    can no longer be assigned, whichever of the two was due first."""
    task = uow.state.tasks[task_id]
    if task.state == "queued" and is_overdue(task, now):
        deadline_passed(uow, task, now)
    else:
        _fire_timer(uow, config, task_id, now, perf_ns)


def _fire_timer(
    uow: UnitOfWork,
    config: SchedulerConfig,
    task_id: UUID,
    now: datetime,
    perf_ns: Callable[[], int],
) -> None:
    state = uow.state
    timer = state.timers[task_id]
    task = state.tasks[timer.task_id]
    uow.emit(scheduler.fire_timer(state.scheduler, timer, now))
    if task.state == "queued":
        uow.emit(tasks.escalate(task, timer.original_tier, timer.fallback_tier, timer.reason, now))
        # The fallback is a routing decision of its own (SPEC §1.5), appended now even
        # if no agent can take the task yet; an assignment in this pass reuses it.
        escalated = state.tasks[timer.task_id]
        decision = _route(uow, config, escalated, now, perf_ns)
        if decision is not None:
            uow.emit(tasks.route(escalated, decision, now))


def _capable(agent: AgentRecord, needed: tuple[str, ...]) -> bool:
    return not needed or agent.capabilities.issuperset(needed)


def pick_agent(
    state: SchedulerState, task: TaskRecord, preferred_host: str | None
) -> AgentRecord | None:
    """The longest-idle agent that can do the task, preferring one beside the endpoint;
    the agent that failed the task last goes after every other (issue #13)."""
    needed = task.needed_capabilities
    agents = state.agents
    avoid = task.last_failed_agent
    if preferred_host is not None:
        for _, agent_id in state.idle_by_host.get(preferred_host, ()):
            if agent_id != avoid and _capable(agents[agent_id], needed):
                return agents[agent_id]
    for _, agent_id in state.idle_order:
        if agent_id != avoid and _capable(agents[agent_id], needed):
            return agents[agent_id]
    if avoid is not None and avoid in state.idle_agents and _capable(agents[avoid], needed):
        return agents[avoid]
    return None


def run_pass(
    uow: UnitOfWork,
    config: SchedulerConfig,
    now: datetime,
    perf_ns: Callable[[], int],
    presence: Presence | None = None,
) -> bool:
    """One scheduling pass. Returns whether it emitted anything. ``presence`` is when
    this process last heard from each agent (none: the log's times alone)."""
    state = uow.state
    before = len(uow.events)
    for entry in state.pop_due(now):
        if state.deadline_is_live(entry):
            _handle_deadline(uow, config, entry, now, perf_ns)
    if state.idle_agents:
        # Before the queue: a silent agent gets no work (issue #13).
        mark_silent_offline(uow, presence or Presence(), config.agent_idle_timeout_s, now)
    if state.queue:
        _assign_queue(uow, config, now, perf_ns)
    return len(uow.events) > before


def _assign_queue(
    uow: UnitOfWork, config: SchedulerConfig, now: datetime, perf_ns: Callable[[], int]
) -> None:
    state = uow.state
    endpoints = list(state.endpoints.values())
    available: dict[TierName, bool] = {
        rule.tier: has_candidate(rule.tier, config, endpoints) for rule in config.ladder
    }
    if not all(available.values()):
        route = partial(_route_now, uow, config, now, perf_ns, endpoints)
        follow_recovery(uow, available, now, route)
    if not state.idle_agents:
        _timers_only(uow, config, available, now)
        return
    every_tier_available = all(available.values())
    # Agents only leave the idle set during a pass, so a capability set that no idle
    # agent has stays unmatched for the rest of it: remember it, skip the scan.
    unmatched: set[tuple[str, ...]] = set()
    # Once every task not yet looked at needs an unmatched set, and their tiers route
    # with no timer to start or cancel, the rest of the queue decides nothing: stop
    # there, not at the end of a backlog that idle agents of other skills cannot take.
    unvisited = dict(state.queued_capabilities)  # by the capabilities they need
    hopeful = len(unvisited)  # the sets among them an idle agent may have
    quiet_tiers = every_tier_available and all(
        tier in available for tier, queued in state.queued_by_tier.items() if queued
    )
    for task in state.queued_tasks():
        if not state.idle_agents and every_tier_available and not state.timers:
            return  # nothing left to assign, and no timer to start or cancel
        if not hopeful and _rest_decides_nothing(state, quiet_tiers):
            return
        needed = task.needed_capabilities
        unvisited[needed] -= 1
        if not unvisited[needed] and needed not in unmatched:
            hopeful -= 1
        if is_overdue(task, now) or is_backing_off(task.not_before, now):
            continue  # not to be assigned now: no timer either
        tier = task.effective_tier
        if not available.get(tier, False):
            _start_timer_if_needed(uow, config, task, now)
            continue
        if not state.idle_agents or needed in unmatched:
            cancel_timer(uow, task.task_id, "tier_recovered", now)
            continue
        recorded = _decision_made_now(task, now)
        decision = recorded or _route(uow, config, task, now, perf_ns, endpoints)
        if decision is None:
            continue
        preferred = None
        if decision.selected_endpoint is not None:
            preferred = state.endpoints[decision.selected_endpoint].host
        agent = pick_agent(state, task, preferred)
        if agent is None:
            unmatched.add(needed)
            if unvisited[needed]:
                hopeful -= 1
            cancel_timer(uow, task.task_id, "tier_recovered", now)
            continue
        _assign(uow, config, task, agent, decision, now, already_routed=recorded is not None)


def _rest_decides_nothing(state: SchedulerState, quiet_tiers: bool) -> bool:
    """Whether the queued tasks a pass has not looked at yet, every one needing
    capabilities no idle agent has, would decide nothing: their tiers all route (no
    timer to start, ``quiet_tiers``) and no timer is pending (none to cancel)."""
    return quiet_tiers and not state.timers


def _decision_made_now(task: TaskRecord, now: datetime) -> ev.RoutingDecision | None:
    """The decision appended for the task's next generation in this very pass, if any."""
    decision = task.routing_decision
    if (
        decision is not None
        and task.routed_generation == task.generation + 1
        and decision.decided_at == now
    ):
        return decision
    return None


def state_config_position(state: SchedulerState, config: SchedulerConfig) -> int:
    """Where ``config`` was recorded, if it is the last recorded one (else 0: unrecorded).

    The runtime records its configuration at start, so in practice this is its
    position; a pass run with a configuration never recorded cites 0.
    """
    return state.config_position if state.config == config else 0


def _route(
    uow: UnitOfWork,
    config: SchedulerConfig,
    task: TaskRecord,
    now: datetime,
    perf_ns: Callable[[], int],
    endpoints: list[EndpointRecord] | None = None,
) -> ev.RoutingDecision | None:
    state = uow.state
    started = perf_ns()
    decision = decide_route(
        task,
        config,
        list(state.endpoints.values()) if endpoints is None else endpoints,
        state.endpoint_state_position,
        now,
        config_position=state_config_position(state, config),
    )
    if decision is None:
        return None
    return replace(decision, scoring_duration_us=(perf_ns() - started) // 1000)


def _route_now(
    uow: UnitOfWork,
    config: SchedulerConfig,
    now: datetime,
    perf_ns: Callable[[], int],
    endpoints: list[EndpointRecord],
    task: TaskRecord,
) -> ev.RoutingDecision | None:
    return _route(uow, config, task, now, perf_ns, endpoints)


def _timers_only(
    uow: UnitOfWork, config: SchedulerConfig, available: dict[TierName, bool], now: datetime
) -> None:
    """A pass with no idle agent: start timers for tiers with no candidate, and cancel
    those whose tier has one again. Touches only those tasks, not the whole queue: of a
    tier with no candidate, the queued tasks with no timer that are not escalated (any
    other would be passed over)."""
    state = uow.state
    for tier, ok in available.items():
        if not ok:
            for task in state.untimed_tasks(tier):
                if not is_overdue(task, now) and not is_backing_off(task.not_before, now):
                    _start_timer_if_needed(uow, config, task, now)
    if not any(state.timed_by_tier.get(tier) for tier, ok in available.items() if ok):
        return  # no queued task with a timer at a tier that can route: none to cancel
    for task_id in list(state.timers):
        task = state.tasks[task_id]
        recovered = task.state == "queued" and available.get(task.effective_tier, False)
        if recovered and not is_overdue(task, now):
            cancel_timer(uow, task_id, "tier_recovered", now)


def _start_timer_if_needed(
    uow: UnitOfWork, config: SchedulerConfig, task: TaskRecord, now: datetime
) -> None:
    if task.task_id in uow.state.timers or task.escalated_to is not None:
        return
    started = scheduler.start_timer(uow.state.scheduler, task, config, now)
    if started is not None:
        uow.emit(started)


def _assign(
    uow: UnitOfWork,
    config: SchedulerConfig,
    task: TaskRecord,
    agent: AgentRecord,
    decision: ev.RoutingDecision,
    now: datetime,
    *,
    already_routed: bool,
) -> None:
    if not already_routed:
        uow.emit(tasks.route(task, decision, now))
        task = uow.state.tasks[task.task_id]
    uow.emit(tasks.assign(task, agent.agent_id, decision, now, config.lease_s))
    uow.emit(agents.reserve(agent, task.task_id, task.generation + 1, now))
    cancel_timer(uow, task.task_id, "assigned", now)
