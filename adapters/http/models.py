"""Request and answer bodies at the HTTP edge: unknown fields refused.

Request bodies are the domain's commands, or are built from the commands' annotated
types (``tierlog.domain.commands``): every limit is declared once, there. A body whose
command has fields the edge fills in itself (the agent from the token, the endpoint or
task from the path) lists only what the caller sends.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from tierlog.adapters.settings import MAX_BATCH_SUBMIT, MAX_BATCH_SUBMIT_CEILING
from tierlog.domain import commands as cmd


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SubmitTask(cmd.SubmitTask):
    """A task submission (SPEC §1.1): the ``SubmitTask`` command, read from JSON.

    JSON carries times and ids as text, so the body is validated in pydantic's ordinary
    mode (``complete_by`` as an ISO 8601 string); the fields that are strict in the
    command (texts, numbers, booleans) stay strict.
    """

    # The command's strict constructor is for Python callers; JSON needs the base one.
    __init__ = BaseModel.__init__


class TaskCreated(BaseModel):
    """The answer to a submission."""

    task_id: str
    state: str
    created: bool
    position: int


class SubmitBatch(_Body):
    """Many task submissions in one request (``POST /v1/tasks/batch``).

    Each entry is validated on its own, as the body of ``POST /v1/tasks`` would be: an
    entry at fault is refused alone, in the answer. Only the list itself is checked
    here (so one bad entry does not refuse the others); its length limit is the
    server's ``max_batch_submit``.
    """

    tasks: Annotated[
        list[Any],
        Field(
            description="the submissions, each a `SubmitTask` body (with its own "
            "`idempotency_key`, if any); at most the server's `max_batch_submit` "
            f"(default {MAX_BATCH_SUBMIT})",
            json_schema_extra={
                "items": {"$ref": "#/components/schemas/SubmitTask"},
                "minItems": 1,
                "maxItems": MAX_BATCH_SUBMIT_CEILING,
            },
        ),
    ]


class ErrorBody(BaseModel):
    """tierlog's one error body, for every status from 400 up (``errors.py``)."""

    error: str = Field(
        description="what went wrong, as a stable code: unauthorized, forbidden, not_found, "
        "not_your_task, invalid_transition, stale_generation, body_too_large, "
        "unsupported_media_type, validation_error, storage_unavailable, not_leader, ...",
        examples=["validation_error"],
    )
    field: str | None = Field(
        description="the field, parameter or header at fault (dotted for a nested field), or null",
        examples=["description"],
    )
    message: str = Field(description="one readable line", examples=["Field required"])


class BatchEntry(BaseModel):
    """What became of one entry of a batch: its task, or the error it was refused with
    (the status and body ``POST /v1/tasks`` would have answered)."""

    index: int = Field(description="the entry's place in `tasks`, from 0")
    status: int = Field(
        description="201 created, 200 submitted before with this key, or an error's"
    )
    task_id: str | None = None
    state: str | None = None
    created: bool | None = None
    error: ErrorBody | None = None


class BatchSubmitted(BaseModel):
    """The answer to a batch: one entry per submission, in order. Every accepted one
    was appended in one commit."""

    position: int
    accepted: int
    rejected: int
    results: list[BatchEntry]


class RegisterAgent(_Body):
    """An agent joining the fleet."""

    agent_id: cmd.Name
    capabilities: cmd.Items = ()
    ollama_host: cmd.ShortText | None = None


class AgentRegistered(BaseModel):
    """The agent's id and its bearer token (shown once)."""

    agent_id: str
    token: str
    position: int


class Heartbeat(_Body):
    """An agent's heartbeat for its current task."""

    task_id: cmd.TaskId
    generation: cmd.Generation


class Complete(_Body):
    """An agent finished its task."""

    generation: cmd.Generation
    result: cmd.JsonValue = None


class Fail(_Body):
    """An agent failed its task."""

    generation: cmd.Generation
    error: cmd.Text


class MarkOffline(_Body):
    """Why an operator marks an agent offline."""

    reason: cmd.ShortText = "operator"


class CancelTask(_Body):
    """Why an operator cancels a task."""

    reason: cmd.LongText = "cancelled"


class RegisterEndpoint(cmd.RegisterEndpoint):
    """An Ollama endpoint; its id is ``host:port`` (the ``RegisterEndpoint`` command)."""

    __init__ = BaseModel.__init__


class HealthReport(_Body):
    """A health check result."""

    ok: bool = Field(strict=True)
    models: cmd.Items | None = None


class ResourcesReport(_Body):
    """An endpoint's resource usage (SPEC §1.7)."""

    cpu_percent: cmd.Percent | None = None
    ram_used_bytes: cmd.Bytes | None = None
    ram_total_bytes: cmd.Bytes | None = None
    vram_used_bytes: cmd.Bytes | None = None
    vram_total_bytes: cmd.Bytes | None = None
    repo: cmd.LongText | None = None


class Written(BaseModel):
    """The answer to a write: what happened and the log position to read it at."""

    ok: bool = True
    position: int
    detail: dict[str, Any] = Field(default_factory=dict)


# --- the error body, and the errors each operation declares --------------------------


_ERRORS: dict[int, str] = {
    401: "No bearer token, or one that nobody holds (`unauthorized`).",
    403: "The token is known but this operation needs another role (`forbidden`; see the "
    "operation's security), or the task is another agent's (`not_your_task`).",
    404: "What the path or the body names does not exist (`not_found`); a task an agent "
    "has never held is not found for that agent.",
    409: "The state refuses it: `invalid_transition` (the task or agent is not in a state "
    "that allows it), `stale_generation` (the generation is not the current one, or the "
    "lease expired), `cancelled` (the task the agent held was cancelled: stop the work) or "
    "`idempotency_conflict` (the key names a task submitted with another body).",
    413: "The body is over `max_body_bytes` (`body_too_large`).",
    415: "The request has a body that is not declared JSON: send `Content-Type: "
    "application/json` (`unsupported_media_type`, field `content-type`).",
    422: "A malformed or out-of-range field, parameter or header (`validation_error`); "
    "`field` names it.",
    503: "The store cannot take the request now (`storage_unavailable`) or no leader is "
    "elected (`not_leader`): nothing was appended; retry after `Retry-After` seconds.",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    503: {"Retry-After": {"description": "seconds", "schema": {"type": "string"}}},
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of the errors an operation can answer, each with the
    error body (and declaring 422 keeps FastAPI from describing its own, which tierlog
    never sends)."""
    return {
        status: {"model": ErrorBody, "description": _ERRORS[status]}
        | ({"headers": _HEADERS[status]} if status in _HEADERS else {})
        for status in statuses
    }


READ = error_responses(401, 403, 422)
"""The errors of a read every operator and viewer may make (any agent: 403)."""
BODY = (413, 415, 422)
"""The errors of a request that carries a body."""
