"""The HTTP API's application: ``create_app`` assembles the routers over a context.

No route code lives here: the routes are in ``routes/`` (one module per resource), what
they depend on in ``deps``. Only whatever runs the app imports this module.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from tierlog.adapters.http.auth import AGENT, Caller
from tierlog.adapters.http.body_limit import BodyLimit, BodyTooLarge
from tierlog.adapters.http.content_type import JsonBodies
from tierlog.adapters.http.deps import DOCS_ASSETS, MAX_WAIT_S, ApiContext, BearerAuth
from tierlog.adapters.http.errors import (
    ApiError,
    domain_error,
    error_response,
    invalid_input,
    not_leader,
    storage_unavailable,
)
from tierlog.adapters.http.hot_path import HotPath, HotRoute
from tierlog.adapters.http.models import Complete, Heartbeat, SubmitTask
from tierlog.adapters.http.routes import agents, dashboard, reads, tasks
from tierlog.domain.errors import DomainError, NotLeaderError, StoreUnavailableError

DESCRIPTION = """Event-sourced, tier-aware task scheduler for fleets of AI agents.

Every operation but `/healthz` needs a bearer token (`Authorization: Bearer TOKEN`):
the operator token (`TIERLOG_ADMIN_TOKEN`, or the file `serve` writes beside the log),
the read-only viewer token (`TIERLOG_VIEWER_TOKEN`), or an agent's own token (the answer
to `POST /v1/agents`). Each operation's security lists the roles it accepts. A request
body is JSON, sent with `Content-Type: application/json`. Every error has one body:
`{"error": code, "field": name or null, "message": text}`."""


def create_app(ctx: ApiContext, *, hot_path: bool = True) -> FastAPI:
    """The FastAPI application over a running runtime and projection runner (``hot_path``
    False: every request takes FastAPI's way, as a test compares)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.polls.loop = asyncio.get_running_loop()
        # Each worker thread keeps its own stack, malloc arena and pooled connection:
        # a bounded pool keeps memory flat however many agents poll at once.
        anyio.to_thread.current_default_thread_limiter().total_tokens = ctx.threads
        await ctx.reads.models.open()
        try:
            yield
        finally:
            await ctx.reads.models.close()

    # /docs (Swagger UI) and /redoc load their scripts and styles from the files the
    # fastapi-offline package ships, served under DOCS_ASSETS: no CDN, so they work with
    # no network. Swagger UI's "Authorize" takes any of the bearer tokens.
    app = FastAPIOffline(
        title="tierlog",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
        swagger_ui_parameters={"validatorUrl": None},
        # FastAPI's OpenTelemetry hook asks on every request whether a provider was
        # configured since; tierlog configures none, so it is off from the start.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.ctx = ctx
    # Middleware added first runs last: the token, then the content type, then the route.
    app.add_middleware(JsonBodies)
    app.add_middleware(BearerAuth, tokens=ctx.tokens)
    # Added last, so it runs first: an oversized body is refused before anything else.
    app.add_middleware(BodyLimit, max_bytes=ctx.max_body_bytes)
    # Before all of them: the fleet's most frequent requests, served without FastAPI's
    # routing and dependencies (anything unusual still takes the way above).
    if hot_path:
        app.add_middleware(HotPath, ctx=ctx, routes=hot_routes(), max_wait_s=MAX_WAIT_S)
    ctx.writer.runtime.add_listener(ctx.on_committed)
    _install_error_handlers(app)
    app.include_router(tasks.router)
    app.include_router(agents.router)
    app.include_router(reads.router)
    app.include_router(dashboard.router)
    return app


_UUID = "([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"


def _is_admin(who: Caller, _: str) -> bool:
    return who.is_admin


def _is_agent(who: Caller, _: str) -> bool:
    return who.role == AGENT


def _is_that_agent(who: Caller, agent_id: str) -> bool:
    return who.role == AGENT and who.agent_id == agent_id


async def _submit(ctx: ApiContext, _who: Caller, _arg: str, body: Any, _wait: float) -> Any:
    return await tasks.submit(ctx, body)


async def _poll(ctx: ApiContext, who: Caller, agent_id: str, _body: Any, wait: float) -> Any:
    return await agents.poll_assignment(agent_id, ctx, who, wait)


async def _heartbeat(ctx: ApiContext, who: Caller, agent_id: str, body: Any, _w: float) -> Any:
    return await agents.heartbeat(agent_id, body, ctx, who)


async def _complete(ctx: ApiContext, who: Caller, task_id: str, body: Any, _w: float) -> Any:
    return await tasks.complete_task(UUID(task_id), body, ctx, who)


def hot_routes() -> list[HotRoute]:
    """The requests ``HotPath`` serves, each with the roles its route accepts."""
    return [
        HotRoute(
            "POST",
            re.compile("^/v1/tasks()$"),
            _is_admin,
            SubmitTask,
            _submit,
            status=201,
            refuse_headers=(b"idempotency-key",),
        ),
        HotRoute("GET", re.compile("^/v1/agents/([^/]+)/assignment$"), _is_that_agent, None, _poll),
        HotRoute(
            "POST",
            re.compile("^/v1/agents/([^/]+)/heartbeat$"),
            _is_that_agent,
            Heartbeat,
            _heartbeat,
        ),
        HotRoute(
            "POST", re.compile(f"^/v1/tasks/{_UUID}/complete$"), _is_agent, Complete, _complete
        ),
    ]


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(invalid_input(exc.errors()))

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400:
            # FastAPI's answer to a body it cannot decode at all (bytes that are not
            # UTF-8); a body that is text but not JSON is already a 422 ``json_invalid``.
            return error_response(
                ApiError(422, "validation_error", f"the body is not JSON ({exc.detail})", "body")
            )
        response = error_response(ApiError(exc.status_code, "http_error", str(exc.detail)))
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405
        return response

    async def too_large(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BodyTooLarge)
        return error_response(exc.api_error())

    async def refused(_: Request, exc: Exception) -> JSONResponse:
        # A command refused where a route builds it (a value the body type let through).
        assert isinstance(exc, DomainError)
        return error_response(domain_error(exc))

    async def store_failed(_: Request, exc: Exception) -> JSONResponse:
        # The disk is full, read-only or failing: this request's commit (or read)
        # failed and nothing was appended; the connection stays open for the next one.
        assert isinstance(exc, StoreUnavailableError)
        return error_response(storage_unavailable(exc))

    app.add_exception_handler(ApiError, api_error)

    async def leaderless(_: Request, exc: Exception) -> JSONResponse:
        # The lease changed hands while this request's batch was decided: nothing of it
        # was appended; the client retries (on this node, which now forwards).
        assert isinstance(exc, NotLeaderError)
        return error_response(not_leader(exc))

    app.add_exception_handler(StoreUnavailableError, store_failed)
    app.add_exception_handler(NotLeaderError, leaderless)
    app.add_exception_handler(DomainError, refused)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(BodyTooLarge, too_large)
