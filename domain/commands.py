"""Commands: typed, frozen requests to change the scheduler, with their limits declared once.

A command is data: what an operator, an agent or the prober asks for. Its fields and
their limits (lengths, ranges, allowed values) are declared here, once, as annotated
types; the HTTP edge uses the same classes (or bodies built from the same types) so a
limit cannot drift between the edge and the domain. Whether the command is allowed in
the current state is decided by its handler (``tierlog.domain.service``), not here.

Constructed in Python (``SubmitTask(description=...)``), a command is validated
strictly: the types must be the right ones (no ``"3"`` for ``3``, no ``True`` for ``1``)
and a bad field raises ``tierlog.domain.errors.ValidationError`` naming it. At the HTTP
edge the same models validate JSON bodies in pydantic's ordinary mode (timestamps and
ids arrive as text), and FastAPI answers 422.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)
from pydantic import ValidationError as PydanticValidationError

from tierlog.domain.config import MAX_SECONDS
from tierlog.domain.errors import ValidationError
from tierlog.domain.limits import (
    CEILINGS,
    MAX_BYTES,
    MAX_GENERATION,
    MAX_ITEMS,
    MAX_LONG_NAME,
    MAX_NAME,
    MAX_TEXT,
    CommandLimits,
    JsonLimitError,
    check_json,
    field_name,
)

__all__ = [
    "COMMANDS",
    "MAX_BYTES",
    "MAX_GENERATION",
    "MAX_ITEMS",
    "MAX_LONG_NAME",
    "MAX_NAME",
    "MAX_TEXT",
    "Bytes",
    "CancelTask",
    "CheckInAgent",
    "Command",
    "CommandLimits",
    "CompleteTask",
    "Deadline",
    "DeregisterAgent",
    "DeregisterEndpoint",
    "FailTask",
    "Generation",
    "HeartbeatTask",
    "Items",
    "JsonObject",
    "JsonValue",
    "LongText",
    "MarkAgentOffline",
    "Name",
    "Percent",
    "Port",
    "Priority",
    "RecordConfiguration",
    "RegisterAgent",
    "RegisterEndpoint",
    "ReportHealth",
    "ReportResources",
    "RequestedTier",
    "RetryTask",
    "RunSchedulingPass",
    "ShortText",
    "SubmitTask",
    "TaskId",
    "Text",
    "field_name",
    "json_safe",
]

LATEST_DEADLINE_YEAR = 9000
"""The last year a deadline may fall in: far from where datetime arithmetic overflows."""


# --- field checks the annotated types share -------------------------------------------


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or white space")
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL: refuse it here, before anything is appended.
        raise ValueError("must not contain NUL characters")
    return value


def _no_white_space(value: str) -> str:
    if any(ch.isspace() for ch in value):
        raise ValueError("must not contain white space")
    return value


def _list_or_tuple(value: Any) -> Any:
    # A string or a set is iterable, but not what a list field means.
    if isinstance(value, list | tuple):
        return tuple(value)
    raise ValueError("must be a list of strings")


def json_safe(value: Any) -> Any:
    """``value`` if it is JSON the log can carry, within the absolute ceilings."""
    check_json(value, CEILINGS)
    return value


def _json_object(value: Any) -> Any:
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise ValueError("must be a JSON object")
    return json_safe(value)


def _within_calendar(value: datetime) -> datetime:
    # A deadline is compared and stored as UTC: 9999-12-31T23:59-23:59 is past year
    # 9999 there, and a time that close to the calendar's end overflows the arithmetic
    # done on it (a timestamp, a lease added).
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("must be a time within the calendar (in UTC)") from None
    if utc.year > LATEST_DEADLINE_YEAR:
        raise ValueError(f"must be a time before the year {LATEST_DEADLINE_YEAR + 1}")
    return value


def _uuid_from_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            raise ValueError("must be a UUID") from None
    return value


# --- the annotated types: each limit is written once, here ----------------------------

Text = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=MAX_TEXT),
    AfterValidator(_not_blank),
]
"""Free text: non-empty, not white space alone, no NUL, at most 100,000 characters."""
ShortText = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=MAX_NAME),
    AfterValidator(_not_blank),
]
"""A short free text (who asked, a key): at most 200 characters."""
LongText = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=MAX_LONG_NAME),
    AfterValidator(_not_blank),
]
"""A repository, a branch or a reason: at most 1,000 characters."""
Name = Annotated[ShortText, AfterValidator(_no_white_space)]
"""An identifier: at most 200 characters, no white space."""
Items = Annotated[tuple[Text, ...], BeforeValidator(_list_or_tuple), Field(max_length=MAX_ITEMS)]
"""A list of free texts (capabilities, file hints, models), at most 1,000 of them."""
Generation = Annotated[int, Field(strict=True, ge=0, le=MAX_GENERATION)]
"""A task's generation, as an agent echoes it back."""
Bytes = Annotated[int, Field(strict=True, ge=0, le=MAX_BYTES)]
"""A size in bytes."""
Percent = Annotated[float, Field(strict=True, ge=0, le=100)]
"""A share of a whole, from 0 to 100."""
Port = Annotated[int, Field(strict=True, ge=1, le=65535)]
"""A TCP port."""
JsonValue = Annotated[Any, AfterValidator(json_safe)]
"""Any JSON value the log can carry."""
JsonObject = Annotated[dict[str, Any], BeforeValidator(_json_object)]
"""A JSON object (string keys) the log can carry."""
Deadline = Annotated[AwareDatetime, AfterValidator(_within_calendar)]
"""A time with its time zone, before the year 9001 (in UTC)."""
BackoffSeconds = Annotated[float, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)]
"""A retry backoff in seconds, from 0 (retry at once) to ten years."""
TaskId = Annotated[UUID, BeforeValidator(_uuid_from_text)]
"""A task id: a UUID, or its text."""
Priority = Literal["urgent", "high", "normal", "low"]
RequestedTier = Literal["trivial", "standard", "complex", "unknown"]


class Command(BaseModel):
    """Base of every command: frozen, unknown fields refused, strict when built in Python."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    #: What the command is called in logs and error messages.
    verb: ClassVar[str] = "command"
    #: Its free-form JSON fields, each with the limit on its encoded size.
    json_fields: ClassVar[dict[str, str]] = {}

    def __init__(self, **data: Any) -> None:
        try:
            self.__pydantic_validator__.validate_python(data, self_instance=self, strict=True)
        except PydanticValidationError as exc:
            raise _validation_error(exc) from None

    def check_limits(self, limits: CommandLimits) -> None:
        """Raise a ``ValidationError`` naming the field and the limit if any value of
        this command is past ``limits`` (the types hold it within the ceilings)."""
        for name, setting in self.json_fields.items():
            _check_json_field(name, getattr(self, name), limits, setting)
        if limits.max_string_chars >= MAX_TEXT and limits.max_list_items >= MAX_ITEMS:
            return  # the types hold every other field within these already
        for name in type(self).model_fields.keys() - self.json_fields.keys():
            value = getattr(self, name)
            if isinstance(value, str):
                _check_length(name, value, limits)
            elif isinstance(value, tuple):
                if len(value) > limits.max_list_items:
                    raise ValidationError(
                        f"{name}: {len(value)} entries, over the limit of "
                        f"{limits.max_list_items} (max_list_items)",
                        field=name,
                    )
                for index, item in enumerate(value):
                    _check_length(f"{name}[{index}]", item, limits)


def _check_length(name: str, text: str, limits: CommandLimits) -> None:
    if len(text) > limits.max_string_chars:
        raise ValidationError(
            f"{name}: {len(text)} characters, over the limit of {limits.max_string_chars} "
            "(max_string_chars)",
            field=name,
        )


def _check_json_field(name: str, value: Any, limits: CommandLimits, setting: str) -> None:
    try:
        check_json(value, limits, max_bytes=getattr(limits, setting), setting=setting)
    except JsonLimitError as exc:
        raise ValidationError(f"{name}{exc.where}: {exc.reason}", field=name) from None


def _validation_error(exc: PydanticValidationError) -> ValidationError:
    first = exc.errors(include_url=False)[0]
    field = field_name(tuple(first["loc"])) or None
    message = first["msg"].removeprefix("Value error, ")
    return ValidationError(f"{field or 'command'}: {message}", field=field)


# --- tasks -----------------------------------------------------------------------------


class SubmitTask(Command):
    """Submit a task (SPEC §1.1). The same ``idempotency_key`` with the same body
    returns the same task; with another body it is refused (``tierlog.domain.idempotency``)."""

    verb: ClassVar[str] = "submit_task"
    json_fields: ClassVar[dict[str, str]] = {"metadata": "max_metadata_bytes"}
    description: Text
    priority: Priority = "normal"
    needed_capabilities: Items = ()
    complexity_tier: RequestedTier | None = None
    file_hints: Items = ()
    verification_steps: Items = ()
    success_criteria: Items = ()
    repo: LongText | None = None
    branch: LongText | None = None
    metadata: JsonObject = Field(default_factory=dict)
    max_retries: Annotated[int, Field(strict=True, ge=0, le=100)] = 3
    complete_by: Deadline | None = None
    submitted_by: ShortText = "unknown"
    idempotency_key: ShortText | None = None
    # This task's retry backoff, overriding the scheduler's (0: retry at once).
    retry_backoff_s: BackoffSeconds | None = None
    retry_backoff_max_s: BackoffSeconds | None = None


class CancelTask(Command):
    """Cancel a queued, running (assigned) or dead-lettered task."""

    verb: ClassVar[str] = "cancel_task"
    task_id: TaskId
    requested_by: ShortText = "unknown"
    reason: LongText = "cancelled"


class RetryTask(Command):
    """Put a dead-lettered task back in the queue."""

    verb: ClassVar[str] = "retry_task"
    task_id: TaskId
    requested_by: ShortText = "unknown"


class HeartbeatTask(Command):
    """An agent extends the lease of the task it holds."""

    verb: ClassVar[str] = "heartbeat"
    agent_id: Name
    task_id: TaskId
    generation: Generation


class CompleteTask(Command):
    """An agent finished its task."""

    verb: ClassVar[str] = "complete_task"
    json_fields: ClassVar[dict[str, str]] = {"result": "max_result_bytes"}
    agent_id: Name
    task_id: TaskId
    generation: Generation
    result: JsonValue = None


class FailTask(Command):
    """An agent failed its task: requeued while retries remain, else dead-lettered."""

    verb: ClassVar[str] = "fail_task"
    agent_id: Name
    task_id: TaskId
    generation: Generation
    error: Text


# --- agents ----------------------------------------------------------------------------


class RegisterAgent(Command):
    """An agent joins (or rejoins) the fleet; ``token_sha256`` is set by the HTTP edge."""

    verb: ClassVar[str] = "register_agent"
    agent_id: Name
    capabilities: Items = ()
    ollama_host: ShortText | None = None
    token_sha256: Annotated[str, Field(strict=True, pattern=r"^[0-9a-f]{64}$")] | None = None


class DeregisterAgent(Command):
    """An agent leaves the fleet; a task it held is reclaimed."""

    verb: ClassVar[str] = "deregister_agent"
    agent_id: Name


class MarkAgentOffline(Command):
    """An agent is marked offline; a task it held is reclaimed."""

    verb: ClassVar[str] = "mark_agent_offline"
    agent_id: Name
    reason: ShortText = "operator"


class CheckInAgent(Command):
    """An agent was heard from (it polled) while marked offline for silence: it comes
    back. The HTTP edge sends it only then; an ordinary poll appends nothing."""

    verb: ClassVar[str] = "check_in_agent"
    agent_id: Name


# --- endpoints -------------------------------------------------------------------------


class RegisterEndpoint(Command):
    """Register (or update) an LLM endpoint; its id is ``host:port``."""

    verb: ClassVar[str] = "register_endpoint"
    host: Name
    port: Port = 11434
    models: Items = ()


class ReportHealth(Command):
    """A health check result for an endpoint."""

    verb: ClassVar[str] = "report_health"
    endpoint_id: Name
    ok: Annotated[bool, Field(strict=True)]
    models: Items | None = None


class ReportResources(Command):
    """An endpoint's resource usage (SPEC §1.7); a field left out is unknown."""

    verb: ClassVar[str] = "report_resources"
    endpoint_id: Name
    cpu_percent: Percent | None = None
    ram_used_bytes: Bytes | None = None
    ram_total_bytes: Bytes | None = None
    vram_used_bytes: Bytes | None = None
    vram_total_bytes: Bytes | None = None
    repo: LongText | None = None


class DeregisterEndpoint(Command):
    """Remove an endpoint from routing."""

    verb: ClassVar[str] = "deregister_endpoint"
    endpoint_id: Name


# --- the scheduler ---------------------------------------------------------------------


class RecordConfiguration(Command):
    """Record the service's configuration in the log, unless it is the last recorded."""

    verb: ClassVar[str] = "record_configuration"


class RecordLeaderElection(Command):
    """Record that ``node_id`` won the election under fencing ``epoch`` (it runs first
    on a new leader, before anything it decides)."""

    verb: ClassVar[str] = "record_leader_election"
    node_id: Name
    epoch: Annotated[int, Field(ge=1, le=2**62)]


class RunSchedulingPass(Command):
    """Decide nothing: the writer catches up with the log and runs a pass (a wake-up)."""

    verb: ClassVar[str] = "run_scheduling_pass"


COMMANDS: dict[str, type[Command]] = {
    command.verb: command
    for command in (
        SubmitTask,
        CancelTask,
        RetryTask,
        HeartbeatTask,
        CompleteTask,
        FailTask,
        RegisterAgent,
        DeregisterAgent,
        MarkAgentOffline,
        CheckInAgent,
        RegisterEndpoint,
        ReportHealth,
        ReportResources,
        DeregisterEndpoint,
        RecordConfiguration,
        RecordLeaderElection,
        RunSchedulingPass,
    )
}
"""Every command by its verb (``submit_task``…): for the CLI and scripted drivers."""


def complete_by_in_future(deadline: datetime | None, now: datetime) -> datetime | None:
    """``deadline`` if it is after ``now`` (a deadline is checked against the clock)."""
    if deadline is not None and deadline <= now:
        raise ValidationError("complete_by must be in the future", field="complete_by")
    return deadline
