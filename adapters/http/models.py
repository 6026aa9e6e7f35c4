"""Pydantic models at the HTTP edge: request bodies are strict, unknown fields refused."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

Priority = Literal["urgent", "high", "normal", "low"]
Tier = Literal["trivial", "standard", "complex", "unknown"]
Text = Field(min_length=1, max_length=100_000)
Name = Field(min_length=1, max_length=200, pattern=r"^\S+$")
Item = Annotated[str, Field(min_length=1, max_length=100_000)]
Generation = Field(ge=0, le=2**62)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmitTask(_Body):
    """A task submission (SPEC §1.1)."""

    description: str = Text
    priority: Priority = "normal"
    needed_capabilities: list[Item] = Field(default_factory=list, max_length=1000)
    complexity_tier: Tier | None = None
    file_hints: list[Item] = Field(default_factory=list, max_length=1000)
    verification_steps: list[Item] = Field(default_factory=list, max_length=1000)
    success_criteria: list[Item] = Field(default_factory=list, max_length=1000)
    repo: str | None = Field(default=None, min_length=1, max_length=1000)
    branch: str | None = Field(default=None, min_length=1, max_length=1000)
    metadata: dict[str, Any] = Field(default_factory=dict)
    max_retries: int = Field(default=3, ge=0, le=100)
    complete_by: AwareDatetime | None = None
    submitted_by: str = Field(default="unknown", min_length=1, max_length=200)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)


class TaskCreated(BaseModel):
    """The answer to a submission."""

    task_id: str
    state: str
    created: bool
    position: int


class RegisterAgent(_Body):
    """An agent joining the fleet."""

    agent_id: str = Name
    capabilities: list[Item] = Field(default_factory=list, max_length=1000)
    ollama_host: str | None = Field(default=None, min_length=1, max_length=200)


class AgentRegistered(BaseModel):
    """The agent's id and its bearer token (shown once)."""

    agent_id: str
    token: str
    position: int


class Heartbeat(_Body):
    """An agent's heartbeat for its current task."""

    task_id: UUID
    generation: int = Generation


class Complete(_Body):
    """An agent finished its task."""

    generation: int = Generation
    result: Any = None


class Fail(_Body):
    """An agent failed its task."""

    generation: int = Generation
    error: str = Text


class CancelTask(_Body):
    """Why an operator cancels a task."""

    reason: str = Field(default="cancelled", min_length=1, max_length=1000)


class RegisterEndpoint(_Body):
    """An Ollama endpoint; its id is ``host:port``."""

    host: str = Name
    port: int = Field(default=11434, ge=1, le=65535)
    models: list[Item] = Field(default_factory=list, max_length=1000)


class HealthReport(_Body):
    """A health check result."""

    ok: bool
    models: list[Item] | None = Field(default=None, max_length=1000)


class ResourcesReport(_Body):
    """An endpoint's resource usage (SPEC §1.7)."""

    cpu_percent: float | None = Field(default=None, ge=0, le=100)
    ram_used_bytes: int | None = Field(default=None, ge=0)
    ram_total_bytes: int | None = Field(default=None, ge=0)
    vram_used_bytes: int | None = Field(default=None, ge=0)
    vram_total_bytes: int | None = Field(default=None, ge=0)
    repo: str | None = Field(default=None, min_length=1, max_length=1000)


class Written(BaseModel):
    """The answer to a write: what happened and the log position to read it at."""

    ok: bool = True
    position: int
    detail: dict[str, Any] = Field(default_factory=dict)
