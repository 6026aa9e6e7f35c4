"""Agent and endpoint routes: register, long-poll for work, heartbeat, leave; endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

import anyio
import msgspec
from fastapi import APIRouter, Body, Path, Query, Response

from tierlog.adapters.http.deps import (
    MAX_WAIT_S,
    ApiContext,
    ApiError,
    Ctx,
    MinPosition,
    Operator,
    OperatorOrSelf,
    Reader,
    SelfAgent,
    Tokens,
)
from tierlog.adapters.http.models import (
    BODY,
    READ,
    AgentRegistered,
    HealthReport,
    Heartbeat,
    MarkOffline,
    RegisterAgent,
    RegisterEndpoint,
    ResourcesReport,
    Written,
    error_responses,
)
from tierlog.domain import commands as cmd
from tierlog.domain import events as ev
from tierlog.domain.state import SchedulerState

router = APIRouter(prefix="/v1", tags=["agents and endpoints"])
AgentId = Annotated[cmd.Name, Path()]
EndpointId = Annotated[str, Path(min_length=3, max_length=300, pattern=r"^\S+:[0-9]{1,5}$")]


@router.post(
    "/agents",
    status_code=201,
    response_model=AgentRegistered,
    responses=error_responses(401, 403, 409, *BODY, 503),
)
async def register_agent(body: RegisterAgent, ctx: Ctx, _auth: Operator) -> AgentRegistered:
    """Register an agent; the answer holds its bearer token, shown only this once."""
    token, token_sha256 = Tokens.issue()
    _, position = await ctx.writer.write(
        cmd.RegisterAgent(
            agent_id=body.agent_id,
            capabilities=body.capabilities,
            ollama_host=body.ollama_host,
            token_sha256=token_sha256,
        )
    )
    return AgentRegistered(agent_id=body.agent_id, token=token, position=position)


Held = tuple[str, UUID | None, int | None]
"""What an agent holds: its status, its task and the task's generation."""


@dataclass(frozen=True)
class _Look:
    """One look at what a polling agent may be told, taken in one trip off the event
    loop: what it holds, a cancellation it may not have heard of, and, when it holds a
    task, the task's assignment (built from the state and the task's own stream)."""

    held: Held | None
    cancelled: tuple[UUID, int] | None = None
    assignment: dict[str, Any] | None = None


def _held(agent_id: str) -> Any:
    def query(state: SchedulerState) -> Held | None:
        agent = state.agents.get(agent_id)
        if agent is None:
            return None
        return agent.status, agent.task_id, agent.generation

    return query


def _glance(ctx: ApiContext, agent_id: str) -> _Look | None:
    """On the event loop, without the runtime's lock: an idle agent with no news, or None
    when only ``_look`` may say (the state may hold a batch being decided, so anything
    but "idle, nothing to tell" is read again under the lock; an idle agent the batch
    makes busy is woken when it commits, as any waiting poll is)."""
    agent = ctx.writer.runtime.state.agents.get(agent_id)
    if agent is None or agent.status != "idle" or agent.cancelled is not None:
        return None
    return _Look((agent.status, agent.task_id, agent.generation))


def _look(ctx: ApiContext, agent_id: str) -> _Look:
    """Runs in a worker thread: the state under the runtime's lock, then (for a task
    held) the task's submission from the log."""

    def query(state: SchedulerState) -> tuple[Held | None, tuple[UUID, int] | None, Any]:
        agent = state.agents.get(agent_id)
        if agent is None:
            return None, None, None
        held = (agent.status, agent.task_id, agent.generation)
        if agent.status != "busy" or agent.task_id is None:
            return held, agent.cancelled, None
        task = state.tasks[agent.task_id]
        return held, None, (task.routing_decision, task.lease_expires_at)

    held, cancelled, task = ctx.writer.runtime.read(query)
    if task is None or held is None or held[1] is None or held[2] is None:
        return _Look(held, cancelled)
    task_id, generation = held[1], held[2]
    events = ctx.log.log.events_of(task_id)
    submitted = next(e for e in events if isinstance(e, ev.TaskSubmitted))
    fields = msgspec.to_builtins(submitted)
    for key in ("originator_id", "originator_version", "timestamp"):
        fields.pop(key, None)
    routing_decision, lease_expires_at = task
    assignment = {
        "task_id": str(task_id),
        "generation": generation,
        **fields,
        "routing_decision": msgspec.to_builtins(routing_decision),
        "lease_expires_at": lease_expires_at.isoformat() if lease_expires_at else None,
    }
    return _Look(held, assignment=assignment)


def _tell_cancelled(ctx: ApiContext, agent_id: str, notice: tuple[UUID, int] | None) -> None:
    """409 ``cancelled`` if the task this agent last held was cancelled while it held
    it and this node has not told it yet (once: then its polls wait for work again)."""
    if notice is not None and ctx.polls.cancelled.first_telling(agent_id, notice):
        task_id, generation = notice
        raise ApiError(
            409,
            "cancelled",
            f"task {task_id} was cancelled while agent {agent_id} held it "
            f"(generation {generation}): stop the work",
            "task_id",
        )


@router.get(
    "/agents/{agent_id}/assignment",
    responses={
        204: {"description": "no work yet"},
        **error_responses(401, 403, 404, 409, 422),
    },
)
async def poll_assignment(
    agent_id: AgentId,
    ctx: Ctx,
    who: SelfAgent,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 0.0,
) -> Any:
    """The agent's current task (200), or 204 when ``wait`` seconds pass without one.

    An agent whose task was cancelled while it held it, and that holds none since,
    hears it once: 409 with error ``cancelled`` naming the task and generation.

    A poll is how an idle agent shows it is alive (issue #13): it appends nothing,
    unless the agent was marked offline for silence, which it ends."""
    deadline = time.monotonic() + min(wait, ctx.polls.max_wait_s)
    checked_in = False
    with ctx.polls.waiting(agent_id) as waiter, ctx.writer.present(agent_id):
        while True:
            waiter.clear()
            look = _glance(ctx, agent_id)
            if look is None:
                look = await anyio.to_thread.run_sync(_look, ctx, agent_id)
            held = look.held
            if held is None or held[0] == "deregistered":
                raise ApiError(404, "not_found", f"no registered agent {agent_id}", "agent_id")
            if ctx.tokens.holder(who.token_sha256) != agent_id:
                # Re-registered while this poll waited: the old token gets nothing.
                raise ApiError(401, "unauthorized", "this token was replaced by a new one")
            if ctx.polls.closing:
                return Response(status_code=204)
            status = held[0]
            if status != "busy":
                _tell_cancelled(ctx, agent_id, look.cancelled)
            if status == "offline" and not checked_in:
                checked_in = True  # one check-in per poll: an operator's offline stays
                if (await ctx.writer.write(cmd.CheckInAgent(agent_id=agent_id)))[0]:
                    continue  # back, and maybe handed a task in the same pass
            if look.assignment is not None:
                if ctx.writer.follows:
                    # A follower's view may trail the log: hand the task out only if it
                    # is still this agent's once the node has caught up to the head.
                    await ctx.writer.confirm()
                    if await ctx.writer.read(_held(agent_id)) != held:
                        continue
                return look.assignment
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Response(status_code=204)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await waiter.wait()


@router.post(
    "/agents/{agent_id}/heartbeat",
    response_model=Written,
    responses=error_responses(401, 403, 404, 409, *BODY, 503),
)
async def heartbeat(agent_id: AgentId, body: Heartbeat, ctx: Ctx, _auth: SelfAgent) -> Written:
    """Extend the lease on the agent's current task."""
    ctx.writer.heard(agent_id)
    lease, position = await ctx.writer.write(
        cmd.HeartbeatTask(agent_id=agent_id, task_id=body.task_id, generation=body.generation)
    )
    return Written(position=position, detail={"lease_expires_at": lease.isoformat()})


@router.delete(
    "/agents/{agent_id}",
    response_model=Written,
    responses=error_responses(401, 403, 404, 422, 503),
)
async def deregister_agent(agent_id: AgentId, ctx: Ctx, _auth: OperatorOrSelf) -> Written:
    """Remove an agent (the operator, or the agent itself); its task is reclaimed."""
    _, position = await ctx.writer.write(cmd.DeregisterAgent(agent_id=agent_id))
    return Written(position=position)


@router.post(
    "/agents/{agent_id}/offline",
    response_model=Written,
    responses=error_responses(401, 403, 404, 409, *BODY, 503),
)
async def mark_agent_offline(
    agent_id: AgentId,
    ctx: Ctx,
    _auth: Operator,
    body: Annotated[MarkOffline | None, Body()] = None,
) -> Written:
    """Mark an agent offline (the operator): it is given no work while offline, and a
    task it held is reclaimed. 404 for an agent never registered or deregistered, 409
    for one already offline."""
    reason = body.reason if body else "operator"
    _, position = await ctx.writer.write(cmd.MarkAgentOffline(agent_id=agent_id, reason=reason))
    return Written(position=position)


@router.delete(
    "/endpoints/{endpoint_id}",
    response_model=Written,
    responses=error_responses(401, 403, 404, 422, 503),
)
async def deregister_endpoint(endpoint_id: EndpointId, ctx: Ctx, _auth: Operator) -> Written:
    """Remove an endpoint from routing (the operator); ``PUT`` registers it again. 404
    for an endpoint never registered or already deregistered."""
    _, position = await ctx.writer.write(cmd.DeregisterEndpoint(endpoint_id=endpoint_id))
    return Written(position=position)


@router.put(
    "/endpoints/{endpoint_id}",
    response_model=Written,
    responses=error_responses(401, 403, *BODY, 503),
)
async def register_endpoint(
    endpoint_id: EndpointId,
    body: RegisterEndpoint,
    ctx: Ctx,
    _auth: Operator,
) -> Written:
    """Register or update an endpoint; ``endpoint_id`` must be ``host:port``."""
    if endpoint_id != f"{body.host}:{body.port}":
        raise ApiError(
            422,
            "validation_error",
            f"endpoint id {endpoint_id!r} is not host:port of the body",
            "endpoint_id",
        )
    _, position = await ctx.writer.write(
        cmd.RegisterEndpoint(host=body.host, port=body.port, models=body.models)
    )
    return Written(position=position)


@router.post(
    "/endpoints/{endpoint_id}/health",
    response_model=Written,
    responses=error_responses(401, 403, 404, *BODY, 503),
)
async def report_health(
    endpoint_id: EndpointId, body: HealthReport, ctx: Ctx, _auth: Operator
) -> Written:
    """A health check result: healthy at once, unhealthy after consecutive failures."""
    status, position = await ctx.writer.write(
        cmd.ReportHealth(endpoint_id=endpoint_id, ok=body.ok, models=body.models)
    )
    return Written(position=position, detail={"status": status})


@router.post(
    "/endpoints/{endpoint_id}/resources",
    response_model=Written,
    responses=error_responses(401, 403, 404, *BODY, 503),
)
async def report_resources(
    endpoint_id: EndpointId,
    body: ResourcesReport,
    ctx: Ctx,
    _auth: Operator,
) -> Written:
    """An endpoint's resource usage."""
    _, position = await ctx.writer.write(
        cmd.ReportResources(endpoint_id=endpoint_id, **body.model_dump())
    )
    return Written(position=position)


@router.get("/endpoints", responses=READ)
async def list_endpoints(
    ctx: Ctx,
    _auth: Reader,
    min_position: MinPosition = None,
) -> dict[str, Any]:
    """Every endpoint with its status, models and latest resources."""
    position = await ctx.reads.at(min_position)
    return {"position": position, "endpoints": await ctx.reads.models.endpoints()}


@router.get("/agents", responses=READ)
async def list_agents(
    ctx: Ctx,
    _auth: Reader,
    min_position: MinPosition = None,
) -> dict[str, Any]:
    """Every registered agent with its status and current task."""
    position = await ctx.reads.at(min_position)
    return {"position": position, "agents": await ctx.reads.models.agents()}
