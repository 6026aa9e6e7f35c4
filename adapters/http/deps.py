"""What the HTTP routes depend on: the context, who is calling (``callers``, re-exported
here), errors, the reads' wait.

A leaf of the HTTP package (as ``deps.py`` in FastAPI's full-stack template): it
imports nothing of the app or of the routes, and the routes reach everything else
through it. The context is one part per concern: the ``Writer`` runs commands through
the runtime's background writer (so concurrent requests share commits), the ``Log``
reads the stored events, ``Reads`` serves the read models and makes a request wait for
its ``min_position``, ``LongPolls`` wakes waiting agents, ``Tokens`` says who is
calling. Every answer says which log position it reflects.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Annotated, Any, TypeVar
from uuid import UUID

import anyio
import msgspec
from fastapi import Depends, Query, Request

from tierlog.adapters.history.time_travel import explain as explain_task
from tierlog.adapters.http import batch as batch
from tierlog.adapters.http.auth import (
    ADMIN,
    AGENT,
    VIEWER,
    Caller,
    digest,
    new_token,
    redacted,
    same_token,
)
from tierlog.adapters.http.callers import (
    DOCS_ASSETS as DOCS_ASSETS,
)
from tierlog.adapters.http.callers import (
    OPERATOR_ONLY_DOC as OPERATOR_ONLY_DOC,
)
from tierlog.adapters.http.callers import (
    PUBLIC_PATHS as PUBLIC_PATHS,
)
from tierlog.adapters.http.callers import (
    UI_ASSETS_PREFIX as UI_ASSETS_PREFIX,
)
from tierlog.adapters.http.callers import (
    UI_PATHS as UI_PATHS,
)
from tierlog.adapters.http.callers import (
    AnyAgent as AnyAgent,
)
from tierlog.adapters.http.callers import (
    BearerAuth as BearerAuth,
)
from tierlog.adapters.http.callers import (
    Operator as Operator,
)
from tierlog.adapters.http.callers import (
    OperatorOrSelf as OperatorOrSelf,
)
from tierlog.adapters.http.callers import (
    Reader as Reader,
)
from tierlog.adapters.http.callers import (
    SelfAgent as SelfAgent,
)
from tierlog.adapters.http.callers import (
    TaskReader as TaskReader,
)
from tierlog.adapters.http.callers import (
    caller_of,
    forbidden,
)
from tierlog.adapters.http.callers import (
    no_task as no_task,
)
from tierlog.adapters.http.errors import ApiError as ApiError
from tierlog.adapters.http.errors import command_error
from tierlog.adapters.http.long_polls import LongPolls as LongPolls
from tierlog.adapters.readside import dashboard as dashboard_reads
from tierlog.adapters.readside.event_lines import event_line as event_line
from tierlog.adapters.readside.event_lines import task_of as task_of
from tierlog.adapters.readside.queries import AsyncReadModels
from tierlog.adapters.readside.runner_process import ReadModelProgress
from tierlog.adapters.runtime.cluster import NodeStatus
from tierlog.adapters.runtime.writer import SchedulerRuntime, StoreFault
from tierlog.adapters.settings import (
    HTTP_THREADS,
    LONG_POLL_MAX_S,
    MAX_BATCH_SUBMIT,
    MAX_BODY_BYTES,
)
from tierlog.adapters.store.codec import topic_of
from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import commands as cmd
from tierlog.domain import errors
from tierlog.domain import events as ev
from tierlog.domain.state import SchedulerState
from tierlog.projections import telemetry as _telemetry
from tierlog.projections.queue import reason_changes_at, waiting_reason

T = TypeVar("T")
MAX_WAIT_S = LONG_POLL_MAX_S
MAX_POSITION = 2**62  # positions are 64-bit integers in both stores
MinPosition = Annotated[
    int | None,
    Query(ge=0, le=MAX_POSITION, description="wait (bounded) until reads reflect this position"),
]
MIN_POSITION_WAIT_S = 2.0
# The telemetry read model's histogram bounds, for the Prometheus form.
LATENCY_BUCKETS_MS = _telemetry.BUCKETS_MS
CANDIDATE_BUCKETS = _telemetry.CANDIDATE_BUCKETS
SCORING_BUCKETS_US = _telemetry.SCORING_BUCKETS_US


# --- the context, one part per concern ---------------------------------------------------


@dataclass
class Writer:
    """Commands through the runtime's background writer, and reads of its state."""

    runtime: SchedulerRuntime

    @property
    def position(self) -> int:
        """The position of the last event the runtime's state has folded in."""
        return self.runtime.state.position

    @property
    def running(self) -> bool:
        """Whether the background writer is running."""
        return self.runtime.running

    @property
    def store_fault(self) -> StoreFault | None:
        """Why the store fails now (None while it takes writes)."""
        return self.runtime.store_fault

    async def write(self, command: cmd.Command) -> tuple[Any, int]:
        """Run a command through the writer; its result and the position to read it at."""
        result = await asyncio.wrap_future(self.runtime.submit(command))
        if isinstance(result, errors.TierlogError):
            raise command_error(result)
        return result, self.position

    async def write_all(self, commands: Sequence[cmd.Command]) -> tuple[list[Any], int]:
        """Run commands as one group commit: each one's result or the ``TierlogError``
        it failed with (the others stand), and the position to read them at.

        On the leader (or the only writer) the batch is decided and appended in one
        transaction, off the event loop; a storage fault or a lost lease fails it whole
        (raised: nothing appended). A follower forwards each command to the leader.
        """
        runtime = self.runtime
        if runtime.is_leader:
            results = await anyio.to_thread.run_sync(runtime.execute_batch, commands)
        else:
            pending = [asyncio.wrap_future(runtime.submit(command)) for command in commands]
            results = list(await asyncio.gather(*pending))
        return results, self.position

    @contextmanager
    def present(self, agent_id: str) -> Iterator[None]:
        """The agent is polling: present for agent liveness while it waits (a poll
        appends nothing; issue #13)."""
        self.runtime.heard(agent_id, polling=True)
        try:
            yield
        finally:
            self.runtime.heard(agent_id, polling=False)

    def heard(self, agent_id: str) -> None:
        """The agent was heard from (a heartbeat, a report): it is alive now."""
        self.runtime.heard(agent_id)

    async def read(self, query: Callable[[SchedulerState], T]) -> T:
        """Read the scheduler's state off the event loop (its lock may be held)."""
        return await anyio.to_thread.run_sync(self.runtime.read, query)

    def now(self) -> datetime:
        """The time on the runtime's clock (the injected one: tests and the demo pass a
        virtual clock), which the scheduler decides by."""
        return self.runtime.clock.now()

    @property
    def follows(self) -> bool:
        """Whether this node is a follower (its state may trail the leader's log)."""
        return not self.runtime.is_leader

    async def confirm(self) -> None:
        """On a follower, fold the log up to its head now, so an answer drawn from the
        state (an assignment) is current in the log, not just in this node's view."""
        if self.follows:
            await anyio.to_thread.run_sync(self.runtime.catch_up)

    def node(self) -> dict[str, Any]:
        """This node's role, epoch, leader, lag and counters (on SQLite: the only writer,
        with no id or epoch)."""
        conflicts = {"conflicts": self.runtime.conflicts}
        node = self.runtime.node
        if node is None:
            solo = NodeStatus(None, "leader", None, None, 0, 0, 0, 0, 0)
            return {**asdict(solo), **conflicts}
        return {**asdict(node.status()), **conflicts}

    def memory(self) -> dict[str, Any]:
        """What the scheduler holds in memory, the store lookups of records that left it,
        and its checkpoints (where the start came from, what was ignored and why)."""
        return self.runtime.memory()

    async def nodes(self) -> list[dict[str, Any]]:
        """Every node seen on this PostgreSQL log, the most recently seen first (none on
        SQLite)."""
        node = self.runtime.node
        if node is None:
            return []
        return [asdict(view) for view in await anyio.to_thread.run_sync(node.nodes)]


@dataclass
class Log:
    """The stored events, read off the event loop."""

    log: EventLog

    async def head(self) -> int:
        """The position of the last stored event."""
        return await anyio.to_thread.run_sync(self.log.head)

    async def events_of(self, aggregate_id: UUID) -> list[ev.DomainEvent]:
        """Every event of one aggregate's stream, in order."""
        return await anyio.to_thread.run_sync(self.log.events_of, aggregate_id)

    async def positioned_events_of(self, aggregate_id: UUID) -> list[tuple[int, ev.DomainEvent]]:
        """Every event of one aggregate's stream with its position, in order."""
        return await anyio.to_thread.run_sync(self.log.positioned_events_of, aggregate_id)

    async def events_at(self, positions: Sequence[int]) -> list[tuple[int, ev.DomainEvent]]:
        """The events at ``positions`` (a few: one indexed read each), in that order."""

        def read() -> list[tuple[int, ev.DomainEvent]]:
            return [found for p in positions for found in self.log.read(p - 1, 1, stop=p)]

        return await anyio.to_thread.run_sync(read)

    async def has_held(self, task_id: UUID, agent_id: str) -> bool:
        """Whether ``agent_id`` was assigned the task at some generation (the task's own
        stream says so: the log, not a read model that may lag)."""
        events = await self.events_of(task_id)
        return any(isinstance(e, ev.TaskAssigned) and e.agent_id == agent_id for e in events)

    async def after(self, position: int, limit: int) -> list[tuple[int, ev.DomainEvent]]:
        """At most ``limit`` events after ``position``, with their positions, in order."""
        return await anyio.to_thread.run_sync(self.log.read, position, limit)


def event_json(event: ev.DomainEvent, position: int | None = None) -> dict[str, Any]:
    """An event as the API shows it; read off the whole log (``position`` given), also
    where it sits and which aggregate it belongs to."""
    where = {} if position is None else {"position": position}
    kind = {"type": type(event).__name__, "topic": topic_of(type(event))}
    aggregate = {} if position is None else {"aggregate_id": str(event.originator_id)}
    return {
        **where,
        **kind,
        **aggregate,
        "version": event.originator_version,
        "timestamp": event.timestamp.isoformat(),
        "payload": redacted(msgspec.to_builtins(event)),
    }


@dataclass
class Reads:
    """The read models, the wait for ``min_position``, and the shared queue page."""

    models: AsyncReadModels
    runner: ReadModelProgress
    writer: Writer
    log: Log
    # GET /v1/queue answers by limit: (position, encoded body, when its waiting reasons
    # go stale: the first complete_by still ahead, as a POSIX time).
    queue_cache: dict[int, tuple[int, bytes, float]] = field(default_factory=dict)
    queue_inflight: dict[int, tuple[int, asyncio.Future[tuple[bytes, float]]]] = field(
        default_factory=dict
    )

    async def at(self, min_position: int | None) -> int:
        """Wait (bounded) for the read models to reach ``min_position``; the position."""
        if min_position is None:
            # The runner (or the process keeping the read models) said where it is.
            return self.runner.committed_position
        if min_position > max(self.writer.position, await self.log.head()):
            raise ApiError(
                422,
                "validation_error",
                "min_position is beyond the head of the log",
                "min_position",
            )
        reached = await self._wait_for(min_position)
        if reached < min_position:
            raise ApiError(
                503,
                "projection_lagging",
                f"read models are at {reached}, not yet at {min_position}; retry",
                "min_position",
            )
        return reached

    async def _wait_for(self, position: int) -> int:
        deadline = asyncio.get_running_loop().time() + MIN_POSITION_WAIT_S
        while self.runner.committed_position < position:
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.002)
        return self.runner.committed_position

    async def queue_page(self, position: int, limit: int) -> bytes:
        """The encoded queue page (``limit`` tasks) at ``position`` or later.

        Pollers at the same log position share one query and one encoding, until the
        scheduler's clock passes a deadline that changes a waiting reason.
        """
        cached = self.queue_cache.get(limit)
        now = self.writer.now().timestamp()
        if cached is None or cached[0] < position or cached[2] <= now:
            # Single flight: the first poller at a new position runs the query, the rest
            # await its answer instead of each running the same query.
            pending = self.queue_inflight.get(limit)
            if pending is None or pending[0] < position:
                task = asyncio.ensure_future(self._encode_queue(position, limit))
                pending = (position, task)
                self.queue_inflight[limit] = pending
            try:
                body, stale_at = await asyncio.shield(pending[1])
            finally:
                if self.queue_inflight.get(limit) is pending and pending[1].done():
                    del self.queue_inflight[limit]
            cached = (pending[0], body, stale_at)
            latest = self.queue_cache.get(limit)
            if latest is None or latest[0] <= cached[0]:
                self.queue_cache[limit] = cached
        return cached[1]

    async def _encode_queue(self, position: int, limit: int) -> tuple[bytes, float]:
        rows, total = await self.models.queue(limit)
        now = self.writer.now()
        for row in rows:
            row["waiting_reason"] = waiting_reason(row, now.isoformat())
        stale_at = min((reason_changes_at(row, now) for row in rows), default=math.inf)
        body = msgspec.json.encode({"position": position, "total": total, "tasks": rows})
        return body, stale_at


@dataclass
class Tokens:
    """The operator token, the optional viewer token, and the agents' tokens (as the
    runtime's state records them: only their digests)."""

    admin_token: str
    runtime: SchedulerRuntime
    viewer_token: str | None = None

    def __post_init__(self) -> None:
        if self.viewer_token is not None and same_token(self.viewer_token, self.admin_token):
            # One token for both would make every viewer an operator.
            raise errors.ConfigurationError(
                "the viewer token must differ from the operator token", field="viewer_token"
            )

    def refresh(self) -> bool:
        """Catch up with the log when other nodes append (they may have registered an
        agent since); whether it did."""
        if self.runtime.node is None:
            return False
        self.runtime.catch_up()
        return True

    def identify(self, authorization: str) -> Caller:
        """Who holds the bearer token in an ``Authorization`` header; 401 if nobody known."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "missing bearer token")
        token = token.strip()
        if same_token(token, self.admin_token):
            return Caller(ADMIN)
        if self.viewer_token and same_token(token, self.viewer_token):
            return Caller(VIEWER)
        agent_id = self.holder(digest(token))
        agent = self.runtime.state.agents.get(agent_id) if agent_id else None
        if agent is None or agent.status == "deregistered":
            raise ApiError(401, "unauthorized", "unknown bearer token")
        return Caller(AGENT, agent_id=agent_id, token_sha256=digest(token))

    def holder(self, token_sha256: str | None) -> str | None:
        """The agent whose current token has this digest, if any."""
        return self.runtime.state.agent_tokens.get(token_sha256 or "")

    @staticmethod
    def issue() -> tuple[str, str]:
        """A new agent token and the digest under which it is recorded."""
        token = new_token()
        return token, digest(token)


@dataclass(frozen=True)
class ApiContext:
    """What the routes need, one part per concern."""

    writer: Writer
    log: Log
    reads: Reads
    polls: LongPolls
    tokens: Tokens
    max_body_bytes: int = MAX_BODY_BYTES
    threads: int = HTTP_THREADS
    """Worker threads for reads of the state and the log (set when the app starts)."""
    max_batch_submit: int = MAX_BATCH_SUBMIT
    """The most tasks one ``POST /v1/tasks/batch`` submits."""

    @classmethod
    def build(
        cls,
        *,
        runtime: SchedulerRuntime,
        runner: ReadModelProgress,
        read_models: AsyncReadModels,
        admin_token: str,
        viewer_token: str | None = None,
        long_poll_max_s: float = LONG_POLL_MAX_S,
        max_body_bytes: int = MAX_BODY_BYTES,
        threads: int = HTTP_THREADS,
        max_batch_submit: int = MAX_BATCH_SUBMIT,
    ) -> ApiContext:
        """The context over a runtime, its projection runner and the read models."""
        writer, log = Writer(runtime), Log(runtime.log)
        return cls(
            writer=writer,
            log=log,
            reads=Reads(read_models, runner, writer, log),
            polls=LongPolls(max_wait_s=long_poll_max_s),
            tokens=Tokens(admin_token, runtime, viewer_token),
            max_body_bytes=max_body_bytes,
            threads=threads,
            max_batch_submit=max_batch_submit,
        )

    def on_committed(self, applied: Sequence[tuple[int, ev.DomainEvent]]) -> None:
        """Runtime listener (writer thread): the read side catches up, long-polls wake."""
        self.reads.runner.wake()
        self.polls.on_committed(applied)


async def context(request: Request) -> ApiContext:
    """The API context (a FastAPI dependency)."""
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(context)]


def require_admin(request: Request) -> ApiContext:
    """The context, once the caller is known to hold the operator token."""
    if not caller_of(request).is_admin:
        raise forbidden([ADMIN])
    ctx: ApiContext = request.app.state.ctx
    return ctx


# --- the dashboard's reads (routes/dashboard.py) ------------------------------------------

Dashboard = dashboard_reads
"""The dashboard's queries (``tierlog.adapters.readside.dashboard``)."""


async def explained(ctx: ApiContext, task_id: UUID) -> list[dict[str, Any]]:
    """The task's story as ``tierlog explain`` tells it (empty for no such task)."""
    return await anyio.to_thread.run_sync(explain_task, ctx.log.log, task_id)


def routing_series(request: Request) -> dashboard_reads.RoutingSeries:
    """This app's routing-decisions series (made at the first call, then kept: each
    later read costs only the events appended since)."""
    series: dashboard_reads.RoutingSeries | None = getattr(
        request.app.state, "routing_series", None
    )
    if series is None:
        ctx: ApiContext = request.app.state.ctx
        series = dashboard_reads.RoutingSeries(ctx.log.log)
        request.app.state.routing_series = series
    return series
