"""Every setting tierlog reads, and every tunable's default, in one place.

``Settings(**flags)`` reads, each source overriding the ones after it: the values given
(the CLI's flags), ``TIERLOG_<KEY>`` environment variables, the TOML file named by
``config`` (the ``--config`` flag only), then the defaults below. The scheduler's policy
(``SchedulerConfig``, whose defaults are the domain's: SPEC §1) is read from the same
sources as flat keys: ``lease_s = 30`` in the file, ``TIERLOG_LEASE_S=30``, and
``[[ladder]]`` tables or ``TIERLOG_LADDER`` as JSON. A bad value raises
``ConfigurationError`` naming the key; the admin and viewer tokens are secrets, never shown.
"""

from __future__ import annotations

import os
import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import pydantic
from pydantic import BeforeValidator, Field, PlainSerializer, SecretStr, TypeAdapter
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tierlog.adapters.store.event_log import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_STORE
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.errors import ConfigurationError, ValidationError
from tierlog.domain.limits import MAX_JSON_BYTES, MAX_JSON_DEPTH, MAX_JSON_ITEMS, CommandLimits
from tierlog.domain.working_set import SETTLED_GRACE_S, SETTLED_MAX, Retention

# --- every tunable default (the constructors that take one default to these) ---------
HOST = "127.0.0.1"
PORT = 8000
PROBE_INTERVAL_S = 10.0
"""Seconds between two rounds of Ollama health checks."""
WRITER_POLL_S = 0.05
"""How long the background writer waits for commands before it looks at the log."""
MAX_BATCH = 1000
"""The most commands the background writer decides and appends as one group commit."""
READ_BATCH = 5000
"""Events the runtime reads from the log per round trip while it catches up."""
PROJECTION_BATCH = 10_000
"""Events the projection runner folds per read-model transaction."""
PROJECTION_POLL_S = 0.02
"""How often the projection runner looks for other processes' appends."""
START_FOLD_BATCH = 20_000
"""Events per read-model transaction while ``serve`` starts (folding in step with the
runtime, a long stretch of the log): fewer, fuller transactions."""
PROJECTION_WORKER_START_EVENTS = 100_000
"""How far behind the log the read models must be, when ``serve`` starts, for a worker
process to fold them while the runtime folds its state."""
PROJECTION_KEEP_ROWS = 1024
"""Rows of each read-model table the projection runner keeps from one batch to the next
(a task's row is about 1.8 KB: 4,096 of them cost serve 7 MB for no measured gain)."""
PROJECTION_HANDOVER_EVENTS = 10_000
"""Events the writer's hand-over to the projection runner holds at most (``serve``)."""
MAX_BODY_BYTES = 1024 * 1024
"""The largest request body the HTTP API reads (a larger one is answered 413)."""
MAX_BODY_CEILING = 256 * 1024 * 1024
MAX_BATCH_SUBMIT = 1000
"""The most tasks one ``POST /v1/tasks/batch`` request may submit (a longer list is 422)."""
MAX_BATCH_SUBMIT_CEILING = 100_000
"""The highest ``max_batch_submit`` may be set to (the OpenAPI document's ``maxItems``)."""
STORE_RETRY_S = 1.0
"""While the store fails, how often the writer retries its pass and probes the store."""
LONG_POLL_MAX_S = 60.0
LEADER_LEASE_S = 3.0
"""How long a leader's lease lasts unless renewed (renewed every third of it)."""
FORWARD_TIMEOUT_S = 10.0
"""How long a follower waits for the leader to answer a forwarded command."""
"""The longest ``wait`` the assignment poll accepts; ``Settings.long_poll_max_s`` may lower it."""
SQLITE_MEMORY_MB = 2
MALLOC_ARENAS = 2
MALLOC_TRIM_EVERY_S = 10.0
MALLOC_MMAP_THRESHOLD_KB = 128
HTTP_THREADS = 4
CHECKPOINT_EVERY_EVENTS = 10_000
"""Events between two checkpoints of the running scheduler's state."""
CHECKPOINT_EVERY_S = 60.0
"""Seconds between two checkpoints while anything is appended."""

ENV_PREFIX = "TIERLOG_"
POLICY = "scheduler"  # the field that holds the policy; its keys are flat everywhere else
_POLICY_TYPES: dict[str, Any] = {f.name: f.type for f in msgspec.structs.fields(SchedulerConfig)}
_NOT_FROM_ENV = {"config", POLICY}  # a file is chosen by the flag; policy keys are flat

Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=1)]
_LIMITS = CommandLimits()  # the defaults of the command limits below


def env_name(key: str) -> str:
    """The environment variable of a setting: ``lease_s`` → ``TIERLOG_LEASE_S``."""
    return f"{ENV_PREFIX}{key.upper()}"


def _policy(value: object) -> SchedulerConfig:
    """The policy from a ``SchedulerConfig`` or a mapping of its keys."""
    if isinstance(value, SchedulerConfig):
        return value
    try:
        return msgspec.convert(value, SchedulerConfig)
    except msgspec.ValidationError as exc:
        # msgspec says where: "... - at `$.ladder[0].tier`": the key is the first step.
        where = re.search(r"at `\$\.(\w+)", str(exc))
        key = where.group(1) if where else POLICY
        raise ConfigurationError(f"invalid setting {key}: {exc}", field=key) from None
    except ValidationError as exc:  # SchedulerConfig's own range checks
        raise ConfigurationError(
            f"invalid setting {exc.field}: {exc.message}", field=exc.field
        ) from None


class Settings(BaseSettings):
    """The settings of one tierlog process (see the module docstring for the sources)."""

    model_config = SettingsConfigDict(
        extra="forbid", frozen=True, arbitrary_types_allowed=True, use_attribute_docstrings=True
    )

    config: Path | None = None
    """The TOML file read (``--config``; there is no environment variable for it)."""
    store: str = DEFAULT_STORE
    """``sqlite:///path.db`` or ``postgresql://user@host:port/db[?schema=NAME]``."""
    store_connect_timeout_s: Seconds = DEFAULT_CONNECT_TIMEOUT_S
    """How long connecting to a PostgreSQL store may take before it is reported
    unreachable (whole seconds, at least 2: libpq's rule)."""
    admin_token: SecretStr | None = None
    """The operator's bearer token; without one, ``serve`` generates and keeps one."""
    viewer_token: SecretStr | None = None
    """A read-only bearer token (reads everything, changes nothing); none by default."""
    host: str = HOST
    """The address ``serve`` listens on."""
    port: Annotated[int, Field(ge=0, le=65535)] = PORT
    """The port ``serve`` listens on."""
    node_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    """This node's name among several ``serve`` nodes on one PostgreSQL log (default:
    host name and process id)."""
    leader_lease_s: Annotated[Seconds, Field(ge=0.5, le=300)] = LEADER_LEASE_S
    """How long the leader's lease lasts unless renewed: a dead leader is replaced
    within about this long (PostgreSQL, several nodes)."""
    forward_timeout_s: Annotated[Seconds, Field(le=300)] = FORWARD_TIMEOUT_S
    """How long a follower waits for the leader to answer a forwarded command before it
    withdraws it and answers 503 (nothing appended)."""
    settled_grace_s: Annotated[float, Field(ge=0, le=86_400, allow_inf_nan=False)] = SETTLED_GRACE_S
    """How long the scheduler keeps a settled record in memory (a task completed,
    cancelled or dead-lettered; an agent or endpoint deregistered) before it is answered
    from the store instead."""
    settled_max: Annotated[int, Field(ge=0, le=1_000_000)] = SETTLED_MAX
    """The most settled records the scheduler keeps in memory (the oldest leave first)."""
    checkpoints: bool = True
    """Whether ``serve`` starts from, and keeps, checkpoints of the scheduler's state."""
    checkpoint_every_events: Count = CHECKPOINT_EVERY_EVENTS
    """Events between two checkpoints of the scheduler's state."""
    checkpoint_every_s: Seconds = CHECKPOINT_EVERY_S
    """Seconds between two checkpoints while anything is appended."""
    sqlite_memory_mb: Annotated[int, Field(ge=1, le=65_536)] = SQLITE_MEMORY_MB
    """A soft limit on the memory SQLite keeps in ``serve`` (page caches of every
    connection together, in MB): beyond it SQLite gives cached pages back, which the
    operating system's file cache then serves."""
    malloc_arenas: Annotated[int, Field(ge=1, le=64)] = MALLOC_ARENAS
    """The most malloc arenas ``serve`` keeps (glibc's ``MALLOC_ARENA_MAX``; one per
    busy thread by default, each holding memory once used)."""
    malloc_mmap_threshold_kb: Annotated[int, Field(ge=0, le=32 * 1024)] = MALLOC_MMAP_THRESHOLD_KB
    """Allocations of this many KiB or more get a mapping of their own in ``serve``,
    handed back to the operating system when freed (glibc's ``M_MMAP_THRESHOLD``,
    fixed instead of sliding up to 32 MB); 0 leaves glibc's sliding threshold."""
    malloc_trim_every_s: Annotated[float, Field(ge=0, le=3600)] = MALLOC_TRIM_EVERY_S
    """Seconds between two hand-backs of free heap pages to the operating system in
    ``serve`` (glibc's ``malloc_trim``); 0 never."""
    http_threads: Annotated[int, Field(ge=2, le=256)] = HTTP_THREADS
    """Worker threads the HTTP edge reads the scheduler's state and the log on."""
    probe: bool = False
    """Whether ``serve`` checks every endpoint's Ollama ``/api/tags``."""
    probe_interval_s: Seconds = PROBE_INTERVAL_S
    """Seconds between two rounds of health checks."""
    writer_poll_s: Seconds = WRITER_POLL_S
    """How long the background writer waits for commands before it looks at the log."""
    max_batch: Count = MAX_BATCH
    """The most commands one group commit holds."""
    read_batch: Count = READ_BATCH
    """Events the runtime reads per round trip while it catches up."""
    projection_batch: Count = PROJECTION_BATCH
    """Events the projection runner folds per read-model transaction."""
    projection_poll_s: Seconds = PROJECTION_POLL_S
    """How often the projection runner looks for other processes' appends."""
    projection_handover_events: Annotated[int, Field(ge=0, le=10_000_000)] = (
        PROJECTION_HANDOVER_EVENTS
    )
    """Events ``serve``'s writer hands its projection runner in memory at most (when
    full, the runner reads the store instead; 0: the runner always reads the store)."""
    projection_process: Literal["auto", "on", "off"] = "auto"
    """Where ``serve`` keeps its read models up to date once started: in a process of
    their own, on another core, so that folding them does not take the writer's
    interpreter lock (``on``), or in a thread of ``serve`` fed by the writer's
    hand-over (``off``); ``auto``: a process of their own when two cores are usable."""
    projection_worker_start_events: Annotated[int, Field(ge=0, le=10**12)] = (
        PROJECTION_WORKER_START_EVENTS
    )
    """Read models at least this many events behind the log when ``serve`` starts are
    folded by a worker process on another core while the runtime folds its state (0:
    never; one core: never)."""
    long_poll_max_s: Annotated[Seconds, Field(le=LONG_POLL_MAX_S)] = LONG_POLL_MAX_S
    """The longest an agent's assignment poll waits (a longer ``wait`` is cut to it; the
    API refuses more than ``LONG_POLL_MAX_S``)."""
    max_body_bytes: Annotated[int, Field(ge=1024, le=MAX_BODY_CEILING)] = MAX_BODY_BYTES
    """The largest HTTP request body read, in bytes (a larger one is answered 413)."""
    max_batch_submit: Annotated[int, Field(ge=1, le=MAX_BATCH_SUBMIT_CEILING)] = MAX_BATCH_SUBMIT
    """The most tasks one ``POST /v1/tasks/batch`` submits; all its accepted tasks are
    appended in one commit (a longer list is refused whole, 422 on ``tasks``)."""
    max_json_depth: Annotated[int, Field(ge=1, le=MAX_JSON_DEPTH)] = _LIMITS.max_json_depth
    """How deep a task's ``metadata`` or an agent's ``result`` may nest."""
    max_string_chars: Annotated[int, Field(ge=1, le=MAX_JSON_BYTES)] = _LIMITS.max_string_chars
    """The longest string a command carries (a field, a key, a string inside JSON); a
    field's own type may be shorter (an agent id: 200)."""
    max_list_items: Annotated[int, Field(ge=1, le=MAX_JSON_ITEMS)] = _LIMITS.max_list_items
    """The most entries of one list (a list field, a JSON array or object)."""
    max_metadata_bytes: Annotated[int, Field(ge=1, le=MAX_JSON_BYTES)] = _LIMITS.max_metadata_bytes
    """The largest a task's ``metadata`` may be, encoded as JSON."""
    max_result_bytes: Annotated[int, Field(ge=1, le=MAX_JSON_BYTES)] = _LIMITS.max_result_bytes
    """The largest an agent's ``result`` may be, encoded as JSON."""
    scheduler: Annotated[
        SchedulerConfig, BeforeValidator(_policy), PlainSerializer(msgspec.to_builtins)
    ] = Field(default_factory=SchedulerConfig)
    """The scheduler's policy (its keys are flat in the file and the environment)."""

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except pydantic.ValidationError as exc:
            raise _configuration_error(exc) from None

    def retention(self) -> Retention:
        """What the running scheduler keeps in memory of settled records."""
        return Retention(settled_grace_s=self.settled_grace_s, settled_max=self.settled_max)

    def command_limits(self) -> CommandLimits:
        """The limits every command is checked against before it is decided."""
        return CommandLimits(
            **{name: getattr(self, name) for name in CommandLimits.__struct_fields__}
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (the values given), then ``TIERLOG_*``, then the ``config`` file."""
        return init_settings, EnvironmentSource(settings_cls), ConfigFileSource(settings_cls)


def load_settings(**flags: Any) -> Settings:
    """The settings, with the flags that were given (``None`` means not given)."""
    return Settings(**{key: value for key, value in flags.items() if value is not None})


def _configuration_error(exc: pydantic.ValidationError) -> ConfigurationError:
    first = exc.errors(include_input=False)[0]
    key = ".".join(str(part) for part in first["loc"]) or "settings"
    if first["type"] == "extra_forbidden":
        return ConfigurationError(f"unknown setting {key}", field=key)
    return ConfigurationError(f"invalid setting {key}: {first['msg']}", field=key)


@cache
def _parser(key: str) -> TypeAdapter[Any]:
    return TypeAdapter(_POLICY_TYPES[key])


def _policy_from_env(key: str, raw: str) -> Any:
    """One policy key's ``TIERLOG_*`` text as its typed value (the ladder is JSON)."""
    name = env_name(key)
    if key == "ladder":
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise ConfigurationError(f"{name} is not JSON: {exc}", field=key) from None
    if raw == "" and _accepts_none(key):
        return None  # an empty variable clears an optional key (default_model)
    try:
        return _parser(key).validate_strings(raw)
    except pydantic.ValidationError as exc:
        message = exc.errors(include_input=False)[0]["msg"]
        raise ConfigurationError(f"{name}: {message}", field=key) from None


def _accepts_none(key: str) -> bool:
    try:
        _parser(key).validate_python(None)
    except pydantic.ValidationError:
        return False
    return True


def _nest_policy(values: dict[str, Any]) -> dict[str, Any]:
    """Flat keys as ``Settings`` takes them: the policy's keys under ``scheduler``."""
    nested = {k: v for k, v in values.items() if k not in _POLICY_TYPES}
    policy = {k: v for k, v in values.items() if k in _POLICY_TYPES}
    if policy:
        nested[POLICY] = policy
    return nested


class EnvironmentSource(PydanticBaseSettingsSource):
    """``TIERLOG_<KEY>`` variables. Settings' values are left as text for pydantic to
    parse; the policy's are parsed here by their type, so the policy itself (msgspec,
    strict) takes the same typed values from the file and from the environment."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """The variable's text (or None), the key, and False: never a complex value."""
        return os.environ.get(env_name(field_name)), field_name, False

    def __call__(self) -> dict[str, Any]:
        """Every setting and policy key whose variable is set."""
        values: dict[str, Any] = {}
        for key in self.settings_cls.model_fields.keys() - _NOT_FROM_ENV:
            if (raw := os.environ.get(env_name(key))) is not None:
                values[key] = raw
        for key in _POLICY_TYPES:
            if (raw := os.environ.get(env_name(key))) is not None:
                values[key] = _policy_from_env(key, raw)
        return _nest_policy(values)


class ConfigFileSource(PydanticBaseSettingsSource):
    """The TOML file named by the ``config`` setting, read as flat keys."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Not used: the file is read whole by ``__call__``."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        """The file's keys (nothing when no file is named); unknown keys are refused."""
        path = self.current_state.get("config")
        if path is None:
            return {}
        try:
            document = tomllib.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"cannot read config {path}: {exc}", field="config") from exc
        known = (self.settings_cls.model_fields.keys() - _NOT_FROM_ENV) | _POLICY_TYPES.keys()
        unknown = sorted(set(document) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown keys in {path}: {', '.join(unknown)}", field=unknown[0]
            )
        return _nest_policy(document)
