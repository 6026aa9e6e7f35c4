"""Request and answer bodies at the HTTP edge: unknown fields refused.

Request bodies are the domain's commands, or are built from the commands' annotated
types (``tierlog.domain.commands``): every limit is declared once, there. A body whose
command has fields the edge fills in itself (the agent from the token, the endpoint or
task from the path) lists only what the caller sends.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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
