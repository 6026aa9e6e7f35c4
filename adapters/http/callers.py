"""Who is calling: the bearer-token middleware and the role checks routes declare.

``BearerAuth`` checks every token before FastAPI reads a body; the ``Security``
dependencies (``Operator``, ``Reader``, ``SelfAgent``, ...) then check the caller's role
for each operation, and list those roles in the OpenAPI document. Routes reach these
through ``deps``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Protocol
from uuid import UUID

import anyio
from fastapi import Request, Security
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase

from tierlog.adapters.http.auth import (
    ADMIN,
    AGENT,
    AGENT_OWN_TASK,
    AGENT_SELF,
    VIEWER,
    Caller,
    forbidden_needs,
)
from tierlog.adapters.http.errors import ApiError, error_response


class TokenBook(Protocol):
    """Who holds which token (``deps.Tokens``)."""

    def identify(self, authorization: str) -> Caller:
        """The caller of an ``Authorization`` header; ``ApiError`` 401 for nobody known."""
        ...

    def refresh(self) -> bool:
        """Catch up with the log when another node may have registered an agent since;
        whether it did (False on a single node: nothing to learn)."""
        ...


class TaskHistory(Protocol):
    """What the log says of who held a task (``deps.Log``)."""

    async def has_held(self, task_id: UUID, agent_id: str) -> bool:
        """Whether ``agent_id`` was assigned the task at some generation."""
        ...


# --- who is calling ----------------------------------------------------------------------

PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
# The dashboard's page and its static files: the page signs in, then every call it
# makes carries the token (routes/dashboard.py).
UI_PATHS, UI_ASSETS_PREFIX = frozenset({"/", "/ui"}), "/ui/"
DOCS_ASSETS = "/docs/assets"
"""Where the API docs' scripts and styles are served (public, like the docs)."""


class BearerAuth:
    """ASGI middleware: every route but the public ones needs a known bearer token.

    It runs before FastAPI reads the body, so a request without a valid token gets
    401 whatever else is wrong with it, and nothing of it is parsed or appended.
    """

    def __init__(self, app: Any, tokens: TokenBook) -> None:
        self.app, self.tokens = app, tokens

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Check the token, then pass the request on (or answer 401)."""
        if scope["type"] != "http" or _is_public(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        try:
            who = await self._identify(header.decode("latin-1"))
        except ApiError as exc:
            await error_response(exc)(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = who
        await self.app(scope, receive, send)

    async def _identify(self, authorization: str) -> Caller:
        try:
            return self.tokens.identify(authorization)
        except ApiError:
            # An agent registered on another node a moment ago: this node may not have
            # folded its registration yet. Catch up once, then decide.
            if not await anyio.to_thread.run_sync(self.tokens.refresh):
                raise
            return self.tokens.identify(authorization)


def _is_public(path: str) -> bool:
    return (
        path in PUBLIC_PATHS
        or path in UI_PATHS
        or path.startswith(UI_ASSETS_PREFIX)
        or path.startswith(DOCS_ASSETS + "/")
    )


def caller_of(request: Request) -> Caller:
    """The caller ``BearerAuth`` identified for this request."""
    who: Caller = request.state.caller
    return who


def forbidden(roles: Sequence[str]) -> ApiError:
    """The 403 for a caller holding none of ``roles``."""
    return ApiError(403, "forbidden", forbidden_needs(roles))


def no_task(task_id: UUID) -> ApiError:
    """The 404 for a task that does not exist, or that the caller may not read (the
    same answer, so an agent learns nothing of other agents' tasks)."""
    return ApiError(404, "not_found", f"no task {task_id}", "task_id")


class _Bearer(SecurityBase):
    """The bearer-token scheme, as a FastAPI security dependency: the OpenAPI document
    lists it, with the roles (``Security(..., scopes=...)``) each operation accepts.

    The token was checked by ``BearerAuth`` before the route ran; each subclass's
    ``__call__`` checks that the caller holds one of the roles in ``scopes``.
    """

    def __init__(self) -> None:
        self.model = HTTPBearerModel(
            description="admin: the operator token; viewer: TIERLOG_VIEWER_TOKEN (reads "
            "only); agent: the token an agent got when it registered. Each operation's "
            "security lists the roles it accepts."
        )
        self.scheme_name = "bearer"


class _Role(_Bearer):
    """Any caller holding one of the roles."""

    async def __call__(self, request: Request, scopes: SecurityScopes) -> Caller:
        who = caller_of(request)
        if who.role not in scopes.scopes:
            raise forbidden(scopes.scopes)
        return who


class _AgentSelf(_Bearer):
    """The agent named in the path with its own token (``agent:self``), or a role."""

    async def __call__(self, agent_id: str, request: Request, scopes: SecurityScopes) -> Caller:
        who = caller_of(request)
        if who.role in scopes.scopes or (AGENT_SELF in scopes.scopes and who.agent_id == agent_id):
            return who
        raise forbidden(scopes.scopes)


class _TaskReader(_Bearer):
    """A role that reads every task, or an agent that has held this task at some
    generation (``agent:own-task``); for any other agent the task does not exist (404)."""

    async def __call__(self, task_id: UUID, request: Request, scopes: SecurityScopes) -> Caller:
        who = caller_of(request)
        if who.role in scopes.scopes:
            return who
        if who.agent_id is not None and AGENT_OWN_TASK in scopes.scopes:
            history: TaskHistory = request.app.state.ctx.log
            if await history.has_held(task_id, who.agent_id):
                return who
            raise no_task(task_id)
        raise forbidden(scopes.scopes)


_role, _agent_self, _task_reader = _Role(), _AgentSelf(), _TaskReader()

# The callers a route may require, as parameter types.
Operator = Annotated[Caller, Security(_role, scopes=[ADMIN])]
Reader = Annotated[Caller, Security(_role, scopes=[ADMIN, VIEWER])]
AnyAgent = Annotated[Caller, Security(_role, scopes=[AGENT])]
SelfAgent = Annotated[Caller, Security(_agent_self, scopes=[AGENT_SELF])]
OperatorOrSelf = Annotated[Caller, Security(_agent_self, scopes=[ADMIN, AGENT_SELF])]
TaskReader = Annotated[Caller, Security(_task_reader, scopes=[ADMIN, VIEWER, AGENT_OWN_TASK])]
OPERATOR_ONLY_DOC: dict[str, Any] = {"security": [{"bearer": [ADMIN]}]}
"""The OpenAPI ``security`` of a route that checks ``require_admin`` in its body (the
hottest route, which skips FastAPI's dependencies)."""
