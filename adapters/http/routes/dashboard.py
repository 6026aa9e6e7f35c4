"""The dashboard: its page (``/``, ``/ui``), its static files, and the reads it needs
that no other route gives (``/v1/ui/...``, for the operator and the viewer).

The page and its files are public (they hold no data); every read it makes carries the
token the person signed in with. The files ship inside the package (``http/ui/``) and
are served with a content security policy that lets the page talk to this server only.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from tierlog.adapters.http.deps import (
    MAX_POSITION,
    MAX_WAIT_S,
    ApiError,
    Ctx,
    Dashboard,
    Reader,
    event_line,
    explained,
    no_task,
    routing_series,
    task_of,
)
from tierlog.adapters.http.models import READ, error_responses

router = APIRouter(tags=["dashboard"])

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}
# Every file the page may load, by the path it is asked for (nothing else is served).
ASSETS = {
    path.relative_to(UI_DIR).as_posix(): path
    for path in sorted(UI_DIR.rglob("*"))
    if path.suffix in _TYPES
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}
FEED_LIMIT_MAX = 1000
FEED_POLL_S = 0.05


def _file(name: str) -> FileResponse:
    path = ASSETS.get(name)
    if path is None:
        raise ApiError(404, "not_found", f"no dashboard file {name}")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=HEADERS)


@router.get("/", include_in_schema=False)
@router.get("/ui", include_in_schema=False)
async def page() -> FileResponse:
    """The dashboard's page (it shows only the sign-in until a token is given)."""
    return _file("index.html")


@router.get("/ui/{name:path}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    """One of the page's static files."""
    return _file(name)


@router.get("/v1/ui/whoami", responses=error_responses(401, 403))
async def whoami(who: Reader) -> dict[str, Any]:
    """The role of the token (``admin`` or ``viewer``): the page shows the operator's
    buttons to the operator only (the server refuses them to anyone else anyway)."""
    return {"role": who.role}


def _now(ctx: Ctx) -> str:
    # The scheduler's clock (the injected one), which timers and leases are set by.
    return ctx.writer.now().isoformat()


@router.get("/v1/ui/overview", responses=error_responses(401, 403))
async def overview(ctx: Ctx, _auth: Reader) -> dict[str, Any]:
    """The log head and each read model's lag; the queue by tier and priority; tasks by
    state and tier; agents and endpoints by status; the server's clock."""
    head = ctx.writer.position
    positions = await ctx.reads.models.projection_positions()
    telemetry = await ctx.reads.models.telemetry()
    return {
        "now": _now(ctx),
        "position": ctx.reads.runner.committed_position,
        "log_head": head,
        "projection_lag": {name: max(0, head - pos) for name, pos in positions.items()},
        "tasks_by_state": telemetry["tasks_by_state_and_tier"],
        **await Dashboard.overview(ctx.reads.models),
    }


@router.get("/v1/ui/queue", responses=READ)
async def queue(
    ctx: Ctx,
    _auth: Reader,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=Dashboard.QUEUE_PAGE_MAX)] = 50,
) -> dict[str, Any]:
    """One page of the queue, in queue order: priority, tier, why each task waits and
    its pending fallback timer (``timer_fires_at``)."""
    now = _now(ctx)
    page = await Dashboard.queue_page(ctx.reads.models, offset, limit, now)
    return {"now": now, "position": ctx.reads.runner.committed_position, **page}


@router.get("/v1/ui/agents", responses=error_responses(401, 403))
async def agents(ctx: Ctx, _auth: Reader) -> dict[str, Any]:
    """Every registered agent: status, current task, its lease expiry, last seen."""
    return {"now": _now(ctx), "agents": await Dashboard.agents(ctx.reads.models)}


@router.get("/v1/ui/endpoints", responses=error_responses(401, 403))
async def endpoints(ctx: Ctx, _auth: Reader) -> dict[str, Any]:
    """Every endpoint: health, models, resources, and the score a standard task would
    give it now (null where it is no candidate)."""
    rows = await ctx.reads.models.endpoints()
    now = ctx.writer.now()
    scored = await ctx.writer.read(lambda state: Dashboard.endpoint_scores(state, now))
    for row in rows:
        row["score"] = scored["scores"].get(row["endpoint_id"])
    listed = [row for row in rows if row["status"] != "deregistered"]
    return {"now": now.isoformat(), "standard_target": scored["target"], "endpoints": listed}


@router.get("/v1/ui/routing", responses=error_responses(401, 403))
async def routing(request: Request, _auth: Reader) -> dict[str, Any]:
    """Routing decisions (tier -> target) per 10 s of the last 10 minutes of events."""
    return await routing_series(request).read()


@router.get("/v1/ui/feed", responses=READ)
async def feed(
    ctx: Ctx,
    _auth: Reader,
    after: Annotated[int | None, Query(ge=0, le=MAX_POSITION)] = None,
    limit: Annotated[int, Query(ge=1, le=FEED_LIMIT_MAX)] = 200,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 0,
) -> dict[str, Any]:
    """Events after position ``after`` (without it: the last ``limit``), one readable
    line each; waits up to ``wait`` s for one. Ask again with ``after=next_after``: a
    reader that does so never misses an event nor sees one twice."""
    if after is None:
        after = max(0, ctx.writer.position - limit)
    events = await _events_after(ctx, after, limit, wait)
    lines = []
    for position, event in events:
        task_id = task_of(event)
        lines.append(
            {
                "position": position,
                "type": type(event).__name__,
                "at": event.timestamp.isoformat(),
                "task_id": None if task_id is None else str(task_id),
                "line": event_line(event),
            }
        )
    # The head says where the log ends: a reader ahead of it (the log was replaced)
    # starts over.
    head = events[-1][0] if events else await ctx.log.head()
    return {"events": lines, "next_after": events[-1][0] if events else after, "head": head}


async def _events_after(ctx: Ctx, after: int, limit: int, wait: float) -> list[Any]:
    """Events after ``after``, waiting up to ``wait`` s for one. The state's position
    is only a hint (it runs ahead of the log while a batch is decided): the log says."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, ctx.polls.max_wait_s)
    while True:
        if ctx.writer.position > after or loop.time() >= deadline:
            events = await ctx.log.after(after, limit)
            if events or loop.time() >= deadline or ctx.polls.closing:
                return events
        if ctx.polls.closing:
            return []
        await asyncio.sleep(FEED_POLL_S)


@router.get("/v1/ui/tasks/{task_id}/story", responses=error_responses(401, 403, 404, 422))
async def story(task_id: UUID, ctx: Ctx, _auth: Reader) -> dict[str, Any]:
    """A task as the tasks read model has it, and its story as ``tierlog explain``
    tells it: every event with its time, each routing decision with its reason and
    candidates, its timers, its assignments and outcomes."""
    task = await ctx.reads.models.task(str(task_id))
    lines = await explained(ctx, task_id)
    if task is None and not lines:
        raise no_task(task_id)
    return {"position": ctx.writer.position, "task": task, "story": lines}
