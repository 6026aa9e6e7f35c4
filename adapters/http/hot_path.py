"""The cheapest way through the app for the requests a fleet makes most: a submission,
an agent's poll, heartbeat and completion (issue #17, item 3).

``HotPath`` is ASGI middleware, outermost of tierlog's. For a request it recognises, it
does what the layers below would (the body limit, the bearer token, the JSON content
type, the body model, the route's role) with everything they look up decided once, at
start, then calls the route's own function and encodes its answer. FastAPI's routing,
dependency solving and per-request checks (measured: most of a request's time on the
event loop) are skipped; the route functions, models and error bodies are the same.

Anything off the happy path goes the long way: a request it does not recognise, a
missing or unknown token, another role, a body that is not JSON or does not validate,
a query it does not expect. The app then answers exactly as it always did (the body
already read is replayed to it), so every error a client can provoke before the command
runs has one source. Errors of the command itself are mapped as the app's handlers map
them (``errors.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from pydantic import BaseModel
from starlette.responses import Response

from tierlog.adapters.http.auth import Caller
from tierlog.adapters.http.content_type import is_json
from tierlog.adapters.http.deps import ApiContext, ApiError
from tierlog.adapters.http.errors import domain_error, error_response, not_leader
from tierlog.adapters.http.errors import storage_unavailable as storage_error
from tierlog.domain.errors import DomainError, NotLeaderError, StoreUnavailableError

Message = dict[str, Any]
Handler = Callable[[ApiContext, Caller, str, Any, float], Awaitable[Any]]
"""A hot route's work: context, caller, the path's argument, the validated body (None
for a GET) and the poll's ``wait``; returns a model, a JSON-able dict, or a Response."""

_WAIT = re.compile(rb"^wait=([0-9]{1,4}(?:\.[0-9]{1,6})?)$")
_JSON = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class HotRoute:
    """One request the hot path serves: method, path (one argument, captured), who may
    call it, its body model, and the work."""

    method: str
    path: re.Pattern[str]
    allowed: Callable[[Caller, str], bool]
    body: type[BaseModel] | None
    handler: Handler
    status: int = 200
    refuse_headers: tuple[bytes, ...] = ()
    """Headers the hot path leaves to the app (it would read them: the submission's
    ``Idempotency-Key``)."""


class _LongWay(Exception):
    """This request goes through the app after all."""


class HotPath:
    """ASGI middleware: serves ``routes`` directly, everything else through ``app``."""

    def __init__(
        self, app: Any, ctx: ApiContext, routes: Sequence[HotRoute], max_wait_s: float
    ) -> None:
        self.app, self.ctx, self.max_wait_s = app, ctx, max_wait_s
        self.routes: dict[str, list[HotRoute]] = {}
        for route in routes:
            self.routes.setdefault(route.method, []).append(route)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve a hot route, or hand the request on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = self._match(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        route, argument = found
        read: list[Message] = []
        try:
            who, body, wait = await self._checked(route, argument, scope, receive, read)
        except _LongWay:
            await self.app(scope, _replay(read, receive), send)
            return
        scope.setdefault("state", {})["caller"] = who
        try:
            answer = await route.handler(self.ctx, who, argument, body, wait)
        except ApiError as exc:
            answer = error_response(exc)
        except DomainError as exc:
            answer = error_response(domain_error(exc))
        except StoreUnavailableError as exc:
            answer = error_response(storage_error(exc))
        except NotLeaderError as exc:
            answer = error_response(not_leader(exc))
        await _send(answer, route.status, scope, receive, send)

    def _match(self, scope: Any) -> tuple[HotRoute, str] | None:
        for route in self.routes.get(scope["method"], ()):
            matched = route.path.match(scope["path"])
            if matched is not None:
                return route, matched.group(1)
        return None

    async def _checked(
        self, route: HotRoute, argument: str, scope: Any, receive: Any, read: list[Message]
    ) -> tuple[Caller, Any, float]:
        """The caller, the body and the wait, as the app would find them; ``_LongWay``
        whenever the app might answer otherwise."""
        headers = dict(scope["headers"])
        if any(name in headers for name in route.refuse_headers):
            raise _LongWay
        try:
            who = self.ctx.tokens.identify(headers.get(b"authorization", b"").decode("latin-1"))
        except ApiError:
            raise _LongWay from None
        if not route.allowed(who, argument):
            raise _LongWay
        wait = self._wait(scope.get("query_string", b""))
        if route.body is None:
            if headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers:
                raise _LongWay
            return who, None, wait
        if not is_json(headers.get(b"content-type", b"").decode("latin-1")):
            raise _LongWay
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.ctx.max_body_bytes:
            raise _LongWay
        raw = await self._body(receive, read)
        try:
            # As FastAPI reads a JSON body: json.loads, then the model in Python mode.
            body = route.body.model_validate(json.loads(raw), from_attributes=True)
        except Exception:  # not JSON, too deep to parse, not valid: the app says which
            raise _LongWay from None
        return who, body, wait

    def _wait(self, query: bytes) -> float:
        if not query:
            return 0.0
        matched = _WAIT.match(query)
        if matched is None:
            raise _LongWay
        wait = float(matched.group(1))
        if wait > self.max_wait_s:
            raise _LongWay
        return wait

    async def _body(self, receive: Any, read: list[Message]) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            read.append(message)
            if message["type"] != "http.request":
                raise _LongWay  # the client went away: the app handles it
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.ctx.max_body_bytes:
                raise _LongWay  # the app answers 413
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(read: list[Message], receive: Any) -> Any:
    """``receive`` for the app: the messages the hot path read, then the rest."""
    pending = list(read)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        message: Message = await receive()
        return message

    return replay


async def _send(answer: Any, status: int, scope: Any, receive: Any, send: Any) -> None:
    if isinstance(answer, Response):
        await answer(scope, receive, send)
        return
    if isinstance(answer, tuple):  # (status, model): the route chose its status
        status, answer = answer
    if isinstance(answer, BaseModel):
        body = answer.__pydantic_serializer__.to_json(answer)
    else:
        body = msgspec.json.encode(answer)
    headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
