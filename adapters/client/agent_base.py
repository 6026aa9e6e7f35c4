"""What ``Agent`` and ``AsyncAgent`` share: their settings, their counters, and the
decisions that do not depend on how a request is sent (what an answer to a heartbeat,
a completion or a registration means for the agent's next step)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from tierlog.adapters.client import api
from tierlog.adapters.client.errors import (
    ApiError,
    ClientError,
    Conflict,
    Forbidden,
    InvalidTransition,
    NotFound,
    PayloadTooLarge,
    StaleGeneration,
    Unauthorized,
    ValidationFailed,
    transient,
)
from tierlog.adapters.client.task import Task

log = logging.getLogger("tierlog.client")

DEFAULT_BEAT_S = 10.0  # heartbeat interval when an assignment names no lease expiry
MIN_BEAT_S = 0.1
STOPPED_TEXT = "the agent stopped before finishing the task"


@dataclass
class AgentStats:
    """What an agent's ``run`` did: tasks completed, failed, abandoned (cancelled or
    reclaimed under it: the handler's work was void) and handed back at a stop."""

    completed: int = 0
    failed: int = 0
    abandoned: int = 0
    handed_back: int = 0

    @property
    def settled(self) -> int:
        """Tasks this agent is done with, whichever way."""
        return self.completed + self.failed + self.abandoned + self.handed_back

    def reached(self, max_tasks: int | None) -> bool:
        """Whether ``max_tasks`` tasks are settled (never, for None)."""
        return max_tasks is not None and self.settled >= max_tasks


class Settle(Enum):
    """What an error answer to ``complete`` or ``fail`` means for the agent."""

    RETRY = "retry"  # no answer or 503: send the same request again after a backoff
    ACKNOWLEDGED = "acknowledged"  # an earlier attempt of ours landed
    REFUSED_RESULT = "refused_result"  # the result is too big or malformed: fail instead
    VOID = "void"  # the task moved on (cancelled, reclaimed, not ours): drop it


def settle(exc: ClientError, retried: bool, reporting_result: bool) -> Settle:
    """How an agent goes on after ``exc`` answered its complete (``reporting_result``)
    or fail. ``retried``: an earlier attempt of this same request got no answer, so a
    409 ``invalid_transition`` (the task is already settled at this generation) means
    that attempt landed."""
    if transient(exc):
        return Settle.RETRY
    if retried and isinstance(exc, InvalidTransition):
        return Settle.ACKNOWLEDGED
    if reporting_result and isinstance(exc, ValidationFailed | PayloadTooLarge):
        return Settle.REFUSED_RESULT
    return Settle.VOID


def voids_task(exc: ClientError) -> bool:
    """Whether a heartbeat's error means the task is no longer this agent's (cancelled,
    stale generation, settled, not found, someone else's)."""
    return isinstance(exc, Conflict | NotFound | Forbidden)


def needs_registering(exc: ClientError) -> bool:
    """Whether a poll's error means the agent must register (again): its token is not
    known or was replaced (401), or the agent is not registered (404)."""
    return isinstance(exc, Unauthorized | NotFound)


def beat_interval(expires: datetime | None, now: datetime | None = None) -> float:
    """A third of the lease still left (the server's expiry against this machine's clock)."""
    if expires is None:
        return DEFAULT_BEAT_S
    left = (expires - (now or datetime.now(UTC))).total_seconds()
    return max(MIN_BEAT_S, left / 3)


def lease_from(answer: Any) -> datetime | None:
    """The new lease expiry in a heartbeat's answer."""
    detail = answer.get("detail") if isinstance(answer, dict) else None
    value = detail.get("lease_expires_at") if isinstance(detail, dict) else None
    return datetime.fromisoformat(value) if isinstance(value, str) else None


class AgentBase:
    """The settings of an agent; see ``Agent`` for what each one means."""

    def __init__(
        self,
        url: str = api.DEFAULT_URL,
        agent_id: str = "agent",
        *,
        token: str | None = None,
        operator_token: str | None = None,
        capabilities: tuple[str, ...] | list[str] = (),
        ollama_host: str | None = None,
        poll_wait_s: float = 30.0,
        backoff: api.Backoff | None = None,
        leave_on_stop: bool | None = None,
        timeout_s: float = 10.0,
        on_token: Callable[[str], None] | None = None,
        transport: Any = None,
    ) -> None:
        if token is None and operator_token is None:
            raise ValueError("an agent needs its own token or the operator token to register")
        self.url = url.rstrip("/")
        self.agent_id = agent_id
        self.token = token
        self.operator_token = operator_token
        self.capabilities = tuple(capabilities)
        self.ollama_host = ollama_host
        self.poll_wait_s = poll_wait_s
        self.backoff = backoff or api.Backoff()
        self.leave_on_stop = operator_token is not None if leave_on_stop is None else leave_on_stop
        self.timeout_s = timeout_s
        self.on_token = on_token
        self.transport = transport  # an httpx transport in place of the network (tests)
        self.stats = AgentStats()
        self.current: Task | None = None
        self.handing_back: Task | None = None  # the task a stop interrupted
        self.must_register = False  # set when the server marked this agent offline

    def _registration(self) -> api.Call:
        call = api.register(self.agent_id, self.capabilities, self.ollama_host)
        return api.Call(
            call.method,
            call.path,
            body=call.body,
            headers=api.auth_headers(self.operator_token),
            has_body=True,
        )

    def _registered(self, answer: Any) -> None:
        self.token = str(answer["token"])
        log.info("agent %s registered", self.agent_id)
        if self.on_token is not None:
            self.on_token(self.token)

    def keep_for_stop(self, task: Task) -> None:
        """The agent is stopping with ``task`` in hand: void the handler's work and keep
        the task for the goodbye to hand back."""
        task.stop("the agent is stopping")
        self.handing_back = task

    def after_void(self, exc: ApiError) -> None:
        """After a task was taken from this agent: a stale generation means its lease
        ran out, and the server marks such an agent offline until it registers again,
        which it does at once when it holds the operator token."""
        if isinstance(exc, StaleGeneration):
            if self.operator_token is not None:
                self.must_register = True
            else:
                log.warning(
                    "agent %s: its lease ran out; the server may hold it offline until it "
                    "is registered again",
                    self.agent_id,
                )

    def _request_timeout(self, call: api.Call) -> float:
        # A long poll's answer may take its whole wait: give it that on top.
        wait = (call.params or {}).get("wait", 0)
        return self.timeout_s + float(wait)

    def _log_retry(self, what: str, exc: ClientError, delay: float) -> None:
        log.warning("agent %s: %s: %s; again in %.1f s", self.agent_id, what, exc, delay)

    def _log_void(self, task: Task, exc: ApiError) -> None:
        log.info("agent %s: task %s is no longer ours (%s)", self.agent_id, task.task_id, exc)


@contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """While inside, SIGTERM and SIGINT call ``stop`` (only in the main thread, where
    Python delivers signals); a second signal gets the handler that was there before
    (Ctrl-C twice interrupts at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping (again to stop at once)", signum)
        for sig in signals:
            signal.signal(sig, previous[sig])
        stop()

    for sig in signals:
        signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig in signals:
            signal.signal(sig, previous[sig])
