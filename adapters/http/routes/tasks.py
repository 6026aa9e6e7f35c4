"""Task routes: submit, read, list, timeline, cancel, retry, complete, fail."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body, Header, Query, Request, Response

from tierlog.adapters.http.deps import (
    OPERATOR_ONLY_DOC,
    AnyAgent,
    ApiContext,
    ApiError,
    Ctx,
    MinPosition,
    Operator,
    Reader,
    TaskReader,
    batch,
    event_json,
    no_task,
    require_admin,
)
from tierlog.adapters.http.models import (
    BODY,
    READ,
    BatchSubmitted,
    CancelTask,
    Complete,
    Fail,
    SubmitBatch,
    SubmitTask,
    TaskCreated,
    Written,
    error_responses,
)
from tierlog.domain import commands as cmd
from tierlog.domain import events as ev

router = APIRouter(prefix="/v1", tags=["tasks"])
JSON = "application/json"


@router.post(
    "/tasks",
    status_code=201,
    response_model=TaskCreated,
    openapi_extra=OPERATOR_ONLY_DOC,
    responses={
        200: {"model": TaskCreated, "description": "Submitted before with this idempotency key"},
        **error_responses(401, 403, 409, *BODY, 503),
    },
)
async def submit_task(
    body: SubmitTask,
    request: Request,
    response: Response,
    idempotency_key: Annotated[cmd.ShortText | None, Header()] = None,
) -> TaskCreated:
    """Submit a task; the same ``Idempotency-Key`` with the same body returns the same
    task (200), with a different body it is 409 ``idempotency_conflict``."""
    # The hottest route: context and auth without FastAPI dependencies (each one
    # costs measurable time on the event loop); the app's hot path calls ``submit``.
    ctx = require_admin(request)
    command: cmd.SubmitTask = body
    if idempotency_key is not None:
        if body.idempotency_key not in (None, idempotency_key):
            raise ApiError(
                422,
                "validation_error",
                "the Idempotency-Key header and the body's idempotency_key differ",
                "idempotency_key",
            )
        command = body.model_copy(update={"idempotency_key": idempotency_key})
    response.status_code, created = await submit(ctx, command)
    return created


async def submit(ctx: ApiContext, command: cmd.SubmitTask) -> tuple[int, TaskCreated]:
    """Run a submission: 201 and the new task, or 200 and the task its idempotency key
    named."""
    result, position = await ctx.writer.write(command)
    created = TaskCreated(
        task_id=str(result.task_id), state=result.state, created=result.created, position=position
    )
    return (201 if result.created else 200), created


@router.post(
    "/tasks/batch",
    response_model=BatchSubmitted,
    openapi_extra=OPERATOR_ONLY_DOC,
    responses={
        200: {
            "description": "One entry per submission, in order: its task or its error",
            "headers": {
                batch.LIMIT_HEADER: {
                    "description": "the most entries one batch may hold (max_batch_submit)",
                    "schema": {"type": "string"},
                }
            },
        },
        **error_responses(401, 403, *BODY, 503),
    },
)
async def submit_batch(body: SubmitBatch, request: Request) -> Response:
    """Submit many tasks in one request: each entry is checked on its own and answered
    with its task (201, or 200 when its ``idempotency_key`` named an earlier task with
    the same body) or its error (the status and body ``POST /v1/tasks`` would answer);
    every accepted entry is appended in one commit. More entries than the server's
    ``max_batch_submit`` (the ``Tierlog-Batch-Limit`` header of every answer) is a 422
    on ``tasks`` and appends nothing."""
    ctx = require_admin(request)
    limit = {batch.LIMIT_HEADER: str(ctx.max_batch_submit)}
    if "idempotency-key" in request.headers:
        # One key for many tasks could name none of them: each entry carries its own.
        raise ApiError(
            422,
            "validation_error",
            "a batch takes no Idempotency-Key header: give each entry its idempotency_key",
            "idempotency_key",
            limit,
        )
    batch.check_size(len(body.tasks), ctx.max_batch_submit)
    checked = [batch.command_of(entry) for entry in body.tasks]
    commands = [item for item in checked if not isinstance(item, ApiError)]
    if commands:
        results, position = await ctx.writer.write_all(commands)
    else:
        results, position = [], ctx.writer.position
    return Response(batch.answer(checked, results, position), headers=limit, media_type=JSON)


@router.get("/tasks/{task_id}", responses=error_responses(401, 404, 422))
async def get_task(
    task_id: UUID,
    ctx: Ctx,
    _auth: TaskReader,
    min_position: MinPosition = None,
) -> dict[str, Any]:
    """One task as the tasks read model has it (an agent reads only a task it has held:
    any other is 404, as one that does not exist)."""
    position = await ctx.reads.at(min_position)
    task = await ctx.reads.models.task(str(task_id))
    if task is None:
        raise no_task(task_id)
    return {"position": position, "task": task}


@router.get("/tasks", responses=READ)
async def list_tasks(
    ctx: Ctx,
    _auth: Reader,
    state: Annotated[
        str | None, Query(pattern="^(queued|assigned|completed|dead_lettered|cancelled)$")
    ] = None,
    tier: Annotated[str | None, Query(pattern="^(trivial|standard|complex)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(pattern="^[0-9]{1,18}$")] = None,
    min_position: MinPosition = None,
) -> dict[str, Any]:
    """Tasks in submission order, filtered; ``next_cursor`` pages on."""
    position = await ctx.reads.at(min_position)
    rows = await ctx.reads.models.tasks(
        state=state, tier=tier, limit=limit, after=int(cursor) if cursor else 0
    )
    next_cursor = str(rows[-1]["submit_position"]) if len(rows) == limit else None
    return {"position": position, "tasks": rows, "next_cursor": next_cursor}


@router.get("/tasks/{task_id}/timeline", responses=error_responses(401, 404, 422))
async def task_timeline(
    task_id: UUID, ctx: Ctx, _auth: TaskReader, min_position: MinPosition = None
) -> dict[str, Any]:
    """Every event of the task's own stream and the fallback-timer events about it, in
    log order, each with its position (for an agent, only of a task it has held).

    Timer events belong to the scheduler's stream; the telemetry read model says where
    a task's are, so they are included as of ``read_position`` (``min_position`` waits
    for the read models as every read does).
    """
    read_position = await ctx.reads.at(min_position)
    events = await ctx.log.positioned_events_of(task_id)
    if not events or not isinstance(events[0][1], ev.TaskSubmitted):
        raise no_task(task_id)
    timers = await ctx.log.events_at(await ctx.reads.models.timer_positions(str(task_id)))
    merged = sorted([*events, *timers], key=lambda found: found[0])
    return {
        "position": ctx.writer.position,
        "read_position": read_position,
        "task_id": str(task_id),
        "events": [event_json(e, position=p) for p, e in merged],
    }


@router.post(
    "/tasks/{task_id}/cancel",
    response_model=Written,
    responses=error_responses(401, 403, 404, 409, *BODY, 503),
)
async def cancel_task(
    task_id: UUID,
    ctx: Ctx,
    _auth: Operator,
    body: Annotated[CancelTask | None, Body()] = None,
) -> Written:
    """Cancel a queued, running (assigned) or dead-lettered task. A running task's agent
    is freed at once and told (409 ``cancelled``) at its next heartbeat, completion,
    failure or poll."""
    reason = body.reason if body else "cancelled"
    _, position = await ctx.writer.write(
        cmd.CancelTask(task_id=task_id, requested_by="operator", reason=reason)
    )
    return Written(position=position)


@router.post(
    "/tasks/{task_id}/retry",
    response_model=Written,
    responses=error_responses(401, 403, 404, 409, *BODY, 503),
)
async def retry_task(task_id: UUID, ctx: Ctx, _auth: Operator) -> Written:
    """Put a dead-lettered task back in the queue."""
    generation, position = await ctx.writer.write(
        cmd.RetryTask(task_id=task_id, requested_by="operator")
    )
    return Written(position=position, detail={"generation": generation})


@router.post(
    "/tasks/{task_id}/complete",
    response_model=Written,
    responses=error_responses(401, 403, 404, 409, *BODY, 503),
)
async def complete_task(task_id: UUID, body: Complete, ctx: Ctx, who: AnyAgent) -> Written:
    """The calling agent finished the task (its generation must be current)."""
    _, position = await ctx.writer.write(
        cmd.CompleteTask(
            agent_id=who.agent(), task_id=task_id, generation=body.generation, result=body.result
        )
    )
    return Written(position=position)


@router.post(
    "/tasks/{task_id}/fail",
    response_model=Written,
    responses=error_responses(401, 403, 404, 409, *BODY, 503),
)
async def fail_task(task_id: UUID, body: Fail, ctx: Ctx, who: AnyAgent) -> Written:
    """The calling agent failed the task: requeued while retries remain."""
    state, position = await ctx.writer.write(
        cmd.FailTask(
            agent_id=who.agent(), task_id=task_id, generation=body.generation, error=body.error
        )
    )
    return Written(position=position, detail={"state": state})
