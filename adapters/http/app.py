"""The HTTP API: app factory, shared context, authentication and error mapping.

Routes live in ``http_tasks``, ``http_agents`` and ``http_reads``; writes go through
the runtime's background writer (so concurrent requests share commits), reads go to
the read models, and every answer says which log position it reflects.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tierlog.adapters.http.auth import digest, same_token
from tierlog.adapters.readside.queries import AsyncReadModels
from tierlog.adapters.readside.runner import ProjectionRunner
from tierlog.adapters.runtime.writer import SchedulerRuntime
from tierlog.domain import commands as cmd
from tierlog.domain import errors
from tierlog.domain import events as ev

T = TypeVar("T")
MAX_WAIT_S = 60.0
MAX_POSITION = 2**62  # positions are 64-bit integers in both stores
MinPosition = Annotated[
    int | None,
    Query(ge=0, le=MAX_POSITION, description="wait (bounded) until reads reflect this position"),
]
MIN_POSITION_WAIT_S = 2.0
_STATUS = {
    errors.ValidationError: 422,
    errors.NotFoundError: 404,
    errors.InvalidTransitionError: 409,
    errors.StaleGenerationError: 409,
    errors.NotYourTaskError: 403,
    errors.ConcurrencyConflictError: 409,
}


class ApiError(Exception):
    """An HTTP error with tierlog's JSON body."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


@dataclass
class Caller:
    """Who is calling: the operator, or one agent."""

    is_admin: bool
    agent_id: str | None = None
    token_sha256: str | None = None

    def agent(self) -> str:
        """The calling agent's id (for routes behind ``a_agent``, which ensures one)."""
        if self.agent_id is None:
            raise ApiError(403, "forbidden", "this needs an agent's own token")
        return self.agent_id


@dataclass
class ApiContext:
    """What every route needs."""

    runtime: SchedulerRuntime
    runner: ProjectionRunner
    reads: AsyncReadModels
    admin_token: str
    loop: asyncio.AbstractEventLoop | None = None
    waiters: dict[str, set[asyncio.Event]] = field(default_factory=lambda: defaultdict(set))
    # GET /v1/queue answers by limit: (position, encoded body).
    queue_cache: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    queue_inflight: dict[int, tuple[int, asyncio.Future[bytes]]] = field(default_factory=dict)
    closing: bool = False

    def on_committed(self, applied: Sequence[tuple[int, ev.DomainEvent]]) -> None:
        """Runtime listener (writer thread): wake long-polls of agents that got work."""
        self.runner.wake()
        agents = {
            e.agent_id
            for _, e in applied
            if isinstance(e, ev.AgentReserved | ev.AgentDeregistered | ev.AgentRegistered)
        }
        if agents and self.loop is not None:
            # The waiters belong to the event loop: touch them only from there.
            self.loop.call_soon_threadsafe(self._wake_agents, agents)

    def shutting_down(self) -> None:
        """The server is stopping: every long-poll answers now (any thread)."""
        self.closing = True
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._wake_agents, set(self.waiters))

    def _wake_agents(self, agents: set[str]) -> None:
        for agent_id in agents:
            for waiter in self.waiters.get(agent_id, ()):
                waiter.set()

    async def write(self, command: cmd.Command) -> tuple[Any, int]:
        """Run a command through the writer; its result and the position to read it at."""
        result = await asyncio.wrap_future(self.runtime.submit(command))
        if isinstance(result, errors.DomainError):
            raise domain_error(result)
        return result, self.runtime.state.position

    async def read_state(self, query: Callable[[Any], T]) -> T:
        """Read the scheduler's state off the event loop (its lock may be held)."""
        return await anyio.to_thread.run_sync(self.runtime.read, query)

    async def reads_at(self, min_position: int | None) -> int:
        """Wait (bounded) for the read models to reach ``min_position``; the position."""
        if min_position is None:
            # serve runs the projection runner in this process: its position is at hand.
            return self.runner.committed_position
        head = self.runtime.state.position
        if min_position > max(head, await anyio.to_thread.run_sync(self.runtime.log.head)):
            raise ApiError(
                422,
                "validation_error",
                "min_position is beyond the head of the log",
                "min_position",
            )
        reached = await self._wait_for_reads(min_position)
        if reached < min_position:
            raise ApiError(
                503,
                "projection_lagging",
                f"read models are at {reached}, not yet at {min_position}; retry",
                "min_position",
            )
        return reached

    async def _wait_for_reads(self, position: int) -> int:
        deadline = asyncio.get_running_loop().time() + MIN_POSITION_WAIT_S
        while self.runner.committed_position < position:
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.002)
        return self.runner.committed_position


def domain_error(exc: errors.DomainError) -> ApiError:
    """The HTTP form of a domain error."""
    status = next((s for t, s in _STATUS.items() if isinstance(exc, t)), 400)
    return ApiError(status, exc.code, exc.message, exc.field)


async def context(request: Request) -> ApiContext:
    """The API context (a FastAPI dependency)."""
    ctx: ApiContext = request.app.state.ctx
    return ctx


def identify(ctx: ApiContext, authorization: str) -> Caller:
    """Who holds the bearer token in an ``Authorization`` header; 401 if nobody known."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "missing bearer token")
    token = token.strip()
    if same_token(token, ctx.admin_token):
        return Caller(is_admin=True)
    agent_id = ctx.runtime.state.agent_tokens.get(digest(token))
    agent = ctx.runtime.state.agents.get(agent_id) if agent_id else None
    if agent is None or agent.status == "deregistered":
        raise ApiError(401, "unauthorized", "unknown bearer token")
    return Caller(is_admin=False, agent_id=agent_id, token_sha256=digest(token))


PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


class BearerAuth:
    """ASGI middleware: every route but the public ones needs a known bearer token.

    It runs before FastAPI reads the body, so a request without a valid token gets
    401 whatever else is wrong with it, and nothing of it is parsed or appended.
    """

    def __init__(self, app: Any, ctx: ApiContext) -> None:
        self.app, self.ctx = app, ctx

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Check the token, then pass the request on (or answer 401)."""
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        try:
            who = identify(self.ctx, header.decode("latin-1"))
        except ApiError as exc:
            await _error_response(exc)(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = who
        await self.app(scope, receive, send)


def _identify(request: Request) -> Caller:
    who: Caller = request.state.caller
    return who


async def caller(request: Request) -> Caller:
    """Who holds the bearer token; 401 when it is missing or unknown (a dependency)."""
    return _identify(request)


def require_admin(request: Request) -> ApiContext:
    """The context, once the caller is known to hold the operator token."""
    if not _identify(request).is_admin:
        raise ApiError(403, "forbidden", "this needs the operator token")
    ctx: ApiContext = request.app.state.ctx
    return ctx


async def admin(request: Request) -> Caller:
    """Only the operator token (a dependency)."""
    who = _identify(request)
    if not who.is_admin:
        raise ApiError(403, "forbidden", "this needs the operator token")
    return who


async def agent_self(agent_id: str, request: Request) -> Caller:
    """Only the agent named in the path, with its own token (a dependency)."""
    who = _identify(request)
    if who.agent_id != agent_id:
        raise ApiError(403, "forbidden", "an agent may act only for itself", "agent_id")
    return who


async def a_agent(request: Request) -> Caller:
    """Any agent, with its own token (a dependency)."""
    who = _identify(request)
    if who.agent_id is None:
        raise ApiError(403, "forbidden", "this needs an agent's own token")
    return who


def _error_response(exc: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    body = {"error": exc.code, "field": exc.field, "message": exc.message}
    return JSONResponse(body, status_code=exc.status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return _error_response(exc)

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [
            str(part)
            for part in first.get("loc", ())
            if part not in ("body", "query", "path", "header") and not isinstance(part, int)
        ]
        return _error_response(
            ApiError(422, "validation_error", str(first.get("msg")), ".".join(loc) or "body")
        )

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        response = _error_response(ApiError(exc.status_code, "http_error", str(exc.detail)))
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405
        return response

    async def refused(_: Request, exc: Exception) -> JSONResponse:
        # A command refused where a route builds it (a value the body type let through).
        assert isinstance(exc, errors.DomainError)
        return _error_response(domain_error(exc))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(errors.DomainError, refused)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)


def create_app(ctx: ApiContext) -> FastAPI:
    """The FastAPI application over a running runtime and projection runner."""
    from tierlog.adapters.http.routes import agents as http_agents
    from tierlog.adapters.http.routes import reads as http_reads
    from tierlog.adapters.http.routes import tasks as http_tasks

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.loop = asyncio.get_running_loop()
        await ctx.reads.open()
        try:
            yield
        finally:
            await ctx.reads.close()

    app = FastAPI(
        title="tierlog",
        version="0.1.0",
        description="Event-sourced, tier-aware task scheduler for fleets of AI agents.",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.add_middleware(BearerAuth, ctx=ctx)
    ctx.runtime.add_listener(ctx.on_committed)
    _install_error_handlers(app)
    app.include_router(http_tasks.router)
    app.include_router(http_agents.router)
    app.include_router(http_reads.router)
    return app
