"""What the sync and async clients share: each request as data (``Call``), how an answer
becomes a value or a typed error, and the backoff between attempts.

Requests are built here once; ``Agent``, ``AsyncAgent`` and ``Operator`` only send them,
so the two agents cannot drift apart in what they ask the server.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

import httpx

from tierlog.adapters.client.errors import ServerUnreachable, TaskFailure, error_for

DEFAULT_URL = "http://127.0.0.1:8000"
MAX_ERROR_CHARS = 8000  # a failure's text sent to the server: the tail, well under limits


@dataclass(frozen=True)
class Call:
    """One HTTP request: method, path under the server's URL, query and JSON body."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    body: Any = None
    headers: dict[str, str] | None = None
    has_body: bool = False


def get(path: str, **params: Any) -> Call:
    """A GET with the query parameters that are not None."""
    return Call("GET", path, {k: v for k, v in params.items() if v is not None} or None)


def post(path: str, body: Any = None, headers: dict[str, str] | None = None) -> Call:
    """A POST with a JSON body (``null`` when ``body`` is None)."""
    return Call("POST", path, body=body, headers=headers, has_body=True)


def auth_headers(token: str | None) -> dict[str, str]:
    """The bearer header for ``token`` (none without one)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def request_args(call: Call) -> dict[str, Any]:
    """Keyword arguments for ``httpx.Client.request`` (or the async one)."""
    args: dict[str, Any] = {"params": call.params}
    if call.has_body:
        args["content"] = json.dumps(call.body, allow_nan=False).encode()
        args["headers"] = {"Content-Type": "application/json", **(call.headers or {})}
    elif call.headers:
        args["headers"] = call.headers
    return args


def unreachable(exc: httpx.HTTPError, url: str) -> ServerUnreachable:
    """The client's error for a request that got no answer."""
    return ServerUnreachable(f"no answer from {url}: {type(exc).__name__}: {exc}")


def decode(response: httpx.Response) -> Any:
    """The answer's JSON (None for 204), or the typed error for an error status."""
    if response.status_code == 204:
        return None
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    if response.status_code >= 400:
        raise error_for(response.status_code, body)
    return body


# --- the agent's requests -------------------------------------------------------------


def register(agent_id: str, capabilities: tuple[str, ...], ollama_host: str | None) -> Call:
    """Register (or re-register) an agent: the answer holds its token."""
    body = {"agent_id": agent_id, "capabilities": list(capabilities), "ollama_host": ollama_host}
    return post("/v1/agents", body)


def poll(agent_id: str, wait_s: float) -> Call:
    """Long-poll for the agent's current task (204 after ``wait_s`` without one)."""
    return get(f"/v1/agents/{agent_id}/assignment", wait=round(wait_s, 3))


def heartbeat(agent_id: str, task_id: str, generation: int) -> Call:
    """Extend the lease on the agent's task."""
    return post(f"/v1/agents/{agent_id}/heartbeat", {"task_id": task_id, "generation": generation})


def complete(task_id: str, generation: int, result: Any) -> Call:
    """Report the task done with ``result`` (JSON)."""
    return post(f"/v1/tasks/{task_id}/complete", {"generation": generation, "result": result})


def fail(task_id: str, generation: int, error: str) -> Call:
    """Report the task failed with ``error`` (its tail, if long)."""
    text = error if len(error) <= MAX_ERROR_CHARS else "..." + error[-MAX_ERROR_CHARS:]
    return post(f"/v1/tasks/{task_id}/fail", {"generation": generation, "error": text or "failed"})


def leave(agent_id: str) -> Call:
    """Deregister the agent (its task, if any, goes back to the queue at once)."""
    return Call("DELETE", f"/v1/agents/{agent_id}")


def exception_text(exc: BaseException) -> str:
    """The text a failed task is reported with: a ``TaskFailure``'s own text, else the
    exception's type and message."""
    if isinstance(exc, TaskFailure):
        return str(exc)
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")


def json_result(value: Any) -> tuple[bool, str]:
    """Whether a handler's return value can be sent as a JSON result, and if not why."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return False, f"the handler's result is not JSON: {exc}"
    return True, ""


# --- backoff ----------------------------------------------------------------------------


@dataclass
class Backoff:
    """Capped exponential backoff with jitter: attempt ``n`` (from 0) waits
    ``min(cap_s, base_s × 2^n)`` times a random factor in [0.5, 1], so many agents
    that lost the server together do not all come back in the same instant."""

    base_s: float = 0.2
    cap_s: float = 10.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(attempt, 32))
        return float(ceiling * self.rng.uniform(0.5, 1.0))
