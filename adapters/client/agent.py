"""``Agent``: a tierlog agent in a thread. ``run(handler)`` registers (or uses its token),
long-polls, runs the handler beside a heartbeat, reports the outcome, and stops
gracefully."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import httpx

from tierlog.adapters.client import api
from tierlog.adapters.client.agent_base import (
    STOPPED_TEXT,
    AgentBase,
    AgentStats,
    Settle,
    beat_interval,
    lease_from,
    log,
    needs_registering,
    settle,
    stop_on_signals,
    voids_task,
)
from tierlog.adapters.client.errors import ApiError, ClientError, Conflict, transient
from tierlog.adapters.client.task import Task

Handler = Callable[[Task], Any]
"""``handler(task)`` returns the result (JSON) or raises; it may be ``async def`` too."""

SYNC_POLL_WAIT_S = 2.0  # a blocking poll cannot be interrupted: a stop waits for it


class _Stopped(Exception):
    """The agent was asked to stop while it waited for the server."""


class _Outcome:
    """What became of a handler's run: its value, its exception, or neither yet."""

    def __init__(self) -> None:
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None


class Agent(AgentBase):
    """An agent on a blocking HTTP client, for a thread (or a plain script).

    - ``token``: the agent's own token; without one it registers with ``operator_token``
      (and again whenever the server no longer knows its token), handing each new token
      to ``on_token`` so it can be kept.
    - ``handler(task)`` runs in a thread of its own while this one heartbeats at a third
      of the lease. Its return value completes the task, its exception fails it (with the
      exception's text). A task cancelled or reclaimed meanwhile (409) is dropped:
      ``task.stopped`` is set and the agent moves on.
    - ``stop()`` (or SIGTERM/SIGINT when ``run`` is in the main thread) ends ``run``: a
      task in hand is handed back at once, by leaving the fleet (``leave_on_stop``: the
      default when it can register again) or else by failing it. A result not yet
      acknowledged is retried, with the same generation, until it is.
    - No answer (or a 503): retried with capped exponential backoff and jitter.
    - ``poll_wait_s``: how long one long poll waits (a stop waits for it to return).
    """

    def __init__(self, url: str = api.DEFAULT_URL, agent_id: str = "agent", **kw: Any) -> None:
        kw.setdefault("poll_wait_s", SYNC_POLL_WAIT_S)
        super().__init__(url, agent_id, **kw)
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._http: httpx.Client | None = None

    def stop(self) -> None:
        """Stop ``run`` (thread-safe): the task in hand is handed back at once."""
        self._stopping.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        """Whether ``stop`` was called."""
        return self._stopping.is_set()

    def run(
        self, handler: Handler, *, handle_signals: bool = True, max_tasks: int | None = None
    ) -> AgentStats:
        """Work until stopped (or until ``max_tasks`` tasks are settled); the counters."""
        with httpx.Client(
            base_url=self.url, timeout=self.timeout_s, transport=self.transport
        ) as http:
            self._http = http
            try:
                with stop_on_signals(self.stop) if handle_signals else nullcontext():
                    self._loop(handler, max_tasks)
                    # A task assigned after the last one settled is handed back at once.
                    if self.stopping or self.stats.reached(max_tasks):
                        self._goodbye()
            finally:
                self._http = None
        return self.stats

    def _loop(self, handler: Handler, max_tasks: int | None) -> None:
        try:
            if self.token is None:
                self._register()
            while not self.stopping and not self.stats.reached(max_tasks):
                if self.must_register:
                    self._register()
                data = self._poll()
                if data is not None:
                    self._work(Task.from_assignment(data), handler)
        except _Stopped:
            pass

    # --- requests ---------------------------------------------------------------------

    def _send(self, call: api.Call) -> Any:
        assert self._http is not None
        headers = api.auth_headers(self.token)
        args = api.request_args(call)
        args["headers"] = {**headers, **args.get("headers", {})}
        try:
            response = self._http.request(
                call.method, call.path, timeout=self._request_timeout(call), **args
            )
        except httpx.HTTPError as exc:
            raise api.unreachable(exc, self.url) from exc
        return api.decode(response)

    def _retrying(self, call: api.Call, what: str) -> Any:
        """Send until answered; a stop ends the wait (``_Stopped``)."""
        attempt = 0
        while True:
            try:
                return self._send(call)
            except ClientError as exc:
                if not transient(exc):
                    raise
                delay = self.backoff.delay(attempt)
                attempt += 1
                self._log_retry(what, exc, delay)
                if self._stopping.wait(delay):
                    raise _Stopped from exc

    def _register(self) -> None:
        try:
            answer = self._retrying(self._registration(), "register")
        except Conflict:
            # A restarted agent whose previous life still holds a task: that task goes
            # back to the queue, and this life starts clean.
            self._retrying(self._with_operator(api.leave(self.agent_id)), "leave")
            answer = self._retrying(self._registration(), "register")
        self._registered(answer)
        self.must_register = False

    def _with_operator(self, call: api.Call) -> api.Call:
        return api.Call(call.method, call.path, headers=api.auth_headers(self.operator_token))

    def _poll(self) -> dict[str, Any] | None:
        try:
            answer = self._retrying(api.poll(self.agent_id, self.poll_wait_s), "poll")
        except ApiError as exc:
            if self.operator_token is None or not needs_registering(exc):
                raise
            log.info("agent %s: %s; registering again", self.agent_id, exc)
            self._register()
            return None
        return answer if isinstance(answer, dict) else None

    # --- one task -----------------------------------------------------------------------

    def _work(self, task: Task, handler: Handler) -> None:
        self.current = task
        try:
            outcome = self._supervise(task, handler)
            if outcome is None:
                return
            if outcome.error is not None:
                self._report(task, api.fail(task.task_id, task.generation, _text(outcome.error)))
                return
            ok, why = api.json_result(outcome.value)
            call = (
                api.complete(task.task_id, task.generation, outcome.value)
                if ok
                else api.fail(task.task_id, task.generation, why)
            )
            self._report(task, call)
        finally:
            self.current = None

    def _supervise(self, task: Task, handler: Handler) -> _Outcome | None:
        """Run the handler beside the heartbeat; its outcome, or None when the task was
        dropped (void) or kept for the stop to hand back."""
        outcome = _Outcome()
        wake = self._wake
        if self.stopping:  # assigned just as the stop came: hand it back untouched
            self.keep_for_stop(task)
            return None

        def target() -> None:
            try:
                value = handler(task)
                if inspect.isawaitable(value):
                    value = asyncio.run(_awaited(value))
                outcome.value = value
            except BaseException as exc:  # a handler's SystemExit fails its task too
                outcome.error = exc
            finally:
                outcome.done = True
                wake.set()

        threading.Thread(target=target, daemon=True, name=f"tierlog-{task.task_id[:8]}").start()
        interval = beat_interval(task.lease_expires_at)
        next_beat, misses = time.monotonic() + interval, 0
        while True:
            # Checked before each wait, and the wake cleared after it: a finish or a
            # stop that comes at any moment is seen at once, never after a whole beat.
            if outcome.done:
                return outcome
            if self.stopping:
                self.keep_for_stop(task)
                return None
            if time.monotonic() < next_beat:
                wake.wait(max(0.0, next_beat - time.monotonic()))
                wake.clear()
                continue
            try:
                answer = self._send(api.heartbeat(self.agent_id, task.task_id, task.generation))
            except ClientError as exc:
                if isinstance(exc, ApiError) and voids_task(exc):
                    self._drop(task, exc)
                    return None
                if not transient(exc):
                    raise
                delay = min(interval, self.backoff.delay(misses))
                misses += 1
                self._log_retry("heartbeat", exc, delay)
                next_beat = time.monotonic() + delay
                continue
            misses = 0
            interval = beat_interval(lease_from(answer))
            next_beat = time.monotonic() + interval

    def _drop(self, task: Task, exc: ApiError) -> None:
        self._log_void(task, exc)
        task.stop(exc.code)
        self.stats.abandoned += 1
        self.after_void(exc)

    def _report(self, task: Task, call: api.Call) -> None:
        """Send a completion or failure until it is acknowledged (same generation)."""
        completing = call.path.endswith("/complete")
        attempt, retried = 0, False
        while True:
            try:
                self._send(call)
            except ClientError as exc:
                verdict = settle(exc, retried, completing)
                if verdict is Settle.RETRY:
                    delay = self.backoff.delay(attempt)
                    attempt, retried = attempt + 1, True
                    self._log_retry(call.path.rsplit("/", 1)[-1], exc, delay)
                    time.sleep(delay)  # a result is never given up for a stop
                    continue
                if verdict is Settle.REFUSED_RESULT:
                    assert isinstance(exc, ApiError)
                    text = f"the server refused the result: {exc.message}"
                    call, completing, attempt, retried = (
                        api.fail(task.task_id, task.generation, text),
                        False,
                        0,
                        False,
                    )
                    continue
                if verdict is Settle.VOID:
                    assert isinstance(exc, ApiError)
                    self._drop(task, exc)
                    return
            if completing:
                self.stats.completed += 1
            else:
                self.stats.failed += 1
            return

    # --- stopping ------------------------------------------------------------------------

    def _goodbye(self) -> None:
        """Hand back what the agent holds: leave the fleet (the server requeues the task
        at once), or fail the task in hand."""
        if self.token is None:  # stopped before it ever registered: nothing to hand back
            return
        held = self._held_at_stop()
        try:
            if self.leave_on_stop:
                self._send_soon(api.leave(self.agent_id), "leave")
                log.info("agent %s left the fleet", self.agent_id)
                if held is not None:
                    self.stats.handed_back += 1
            elif held is not None:
                self._send_soon(api.fail(held.task_id, held.generation, STOPPED_TEXT), "fail")
                self.stats.handed_back += 1
        except ClientError as exc:
            log.warning("agent %s could not hand back its work: %s", self.agent_id, exc)

    def _held_at_stop(self) -> Task | None:
        # The task the handler was stopped on; else one assigned since the last poll.
        held = self.handing_back
        if held is not None or self.leave_on_stop:
            return held
        try:
            data = self._send(api.poll(self.agent_id, 0))
        except ClientError:
            return None
        return Task.from_assignment(data) if isinstance(data, dict) else None

    def _send_soon(self, call: api.Call, what: str, tries: int = 5) -> Any:
        """Send with a few backed-off retries (a stop should not hang on a dead server)."""
        for attempt in range(tries):
            try:
                return self._send(call)
            except ClientError as exc:
                if not transient(exc) or attempt == tries - 1:
                    raise
                delay = self.backoff.delay(attempt)
                self._log_retry(what, exc, delay)
                time.sleep(delay)
        return None


async def _awaited(value: Any) -> Any:
    return await value


def _text(exc: BaseException) -> str:
    return api.exception_text(exc)
