"""``AsyncAgent``: the same agent as ``Agent`` on asyncio: ``await agent.run(handler)``.

The long poll and the handler are tasks, so a stop, a cancellation or a reclaim
interrupts them at once (an ``async`` handler is cancelled; a plain function runs in a
worker thread and its result is dropped)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import threading
from collections.abc import Callable, Iterator
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
    voids_task,
)
from tierlog.adapters.client.errors import ApiError, ClientError, Conflict, transient
from tierlog.adapters.client.task import Task

AsyncHandler = Callable[[Task], Any]
"""``handler(task)``: ``async def`` (cancelled when the work is void) or a plain function
(run in a worker thread)."""


class _Stopped(Exception):
    """The agent was asked to stop while it waited."""


class AsyncAgent(AgentBase):
    """An agent on httpx's async client; the settings and behaviour of ``Agent``, with a
    long poll of ``poll_wait_s`` (30 s) that a stop cuts short."""

    def __init__(self, url: str = api.DEFAULT_URL, agent_id: str = "agent", **kw: Any) -> None:
        super().__init__(url, agent_id, **kw)
        self._stop_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = False
        self._http: httpx.AsyncClient | None = None

    def stop(self) -> None:
        """Stop ``run``; callable from any thread."""
        self._stop_requested = True
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)

    @property
    def stopping(self) -> bool:
        """Whether ``stop`` was called."""
        return self._stop_requested

    async def run(
        self,
        handler: AsyncHandler,
        *,
        handle_signals: bool = True,
        max_tasks: int | None = None,
    ) -> AgentStats:
        """Work until stopped (or until ``max_tasks`` tasks are settled); the counters."""
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        if self._stop_requested:
            self._stop_event.set()
        async with httpx.AsyncClient(
            base_url=self.url, timeout=self.timeout_s, transport=self.transport
        ) as http:
            self._http = http
            with self._signals() if handle_signals else contextlib.nullcontext():
                try:
                    if self.token is None:
                        await self._register()
                    while not self.stopping and not self.stats.reached(max_tasks):
                        if self.must_register:
                            await self._register()
                        data = await self._poll()
                        if data is not None:
                            await self._work(Task.from_assignment(data), handler)
                except _Stopped:
                    pass
                # A task assigned after the last one settled is handed back at once.
                if self.stopping or self.stats.reached(max_tasks):
                    await self._goodbye()
            self._http = None
        return self.stats

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        assert self._loop is not None
        loop, signals = self._loop, (signal.SIGTERM, signal.SIGINT)

        def on_signal() -> None:
            log.info("agent %s: signal: stopping", self.agent_id)
            for sig in signals:
                loop.remove_signal_handler(sig)  # a second signal acts as it would have
            self.stop()

        for sig in signals:
            loop.add_signal_handler(sig, on_signal)
        try:
            yield
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    # --- requests -----------------------------------------------------------------------

    async def _send(self, call: api.Call) -> Any:
        assert self._http is not None
        args = api.request_args(call)
        args["headers"] = {**api.auth_headers(self.token), **args.get("headers", {})}
        try:
            response = await self._http.request(
                call.method, call.path, timeout=self._request_timeout(call), **args
            )
        except httpx.HTTPError as exc:
            raise api.unreachable(exc, self.url) from exc
        return api.decode(response)

    async def _until_stop(self, work: Any) -> Any:
        """Await ``work`` unless a stop comes first (then ``_Stopped``)."""
        assert self._stop_event is not None
        job = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait({job, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if not job.done():
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job
            raise _Stopped
        return job.result()

    async def _retrying(self, call: api.Call, what: str) -> Any:
        attempt = 0
        while True:
            try:
                return await self._until_stop(self._send(call))
            except ClientError as exc:
                if not transient(exc):
                    raise
                delay = self.backoff.delay(attempt)
                attempt += 1
                self._log_retry(what, exc, delay)
                await self._until_stop(asyncio.sleep(delay))

    async def _register(self) -> None:
        try:
            answer = await self._retrying(self._registration(), "register")
        except Conflict:
            # A restarted agent whose previous life holds a task: hand that task back.
            leave = api.leave(self.agent_id)
            headers = api.auth_headers(self.operator_token)
            await self._retrying(api.Call(leave.method, leave.path, headers=headers), "leave")
            answer = await self._retrying(self._registration(), "register")
        self._registered(answer)
        self.must_register = False

    async def _poll(self) -> dict[str, Any] | None:
        try:
            answer = await self._retrying(api.poll(self.agent_id, self.poll_wait_s), "poll")
        except ApiError as exc:
            if self.operator_token is None or not needs_registering(exc):
                raise
            log.info("agent %s: %s; registering again", self.agent_id, exc)
            await self._register()
            return None
        return answer if isinstance(answer, dict) else None

    # --- one task -----------------------------------------------------------------------

    async def _work(self, task: Task, handler: AsyncHandler) -> None:
        self.current = task
        try:
            job = asyncio.ensure_future(_call(handler, task))
            finished = await self._supervise(task, job)
            if not finished:
                job.cancel()
                return
            error = job.exception()
            if error is not None:
                call = api.fail(task.task_id, task.generation, api.exception_text(error))
            else:
                value = job.result()
                ok, why = api.json_result(value)
                call = (
                    api.complete(task.task_id, task.generation, value)
                    if ok
                    else api.fail(task.task_id, task.generation, why)
                )
            await self._report(task, call)
        finally:
            self.current = None

    async def _supervise(self, task: Task, job: asyncio.Future[Any]) -> bool:
        """Heartbeat while the handler runs: True once it is done, False when the task
        was dropped or the agent is stopping."""
        assert self._stop_event is not None
        interval, misses = beat_interval(task.lease_expires_at), 0
        stopper = asyncio.ensure_future(self._stop_event.wait())
        try:
            while True:
                done, _ = await asyncio.wait(
                    {job, stopper}, timeout=interval, return_when=asyncio.FIRST_COMPLETED
                )
                if job in done:
                    return True
                if stopper in done:
                    self.keep_for_stop(task)
                    return False
                try:
                    answer = await self._send(
                        api.heartbeat(self.agent_id, task.task_id, task.generation)
                    )
                except ClientError as exc:
                    if isinstance(exc, ApiError) and voids_task(exc):
                        self._drop(task, exc)
                        return False
                    if not transient(exc):
                        raise
                    interval = min(beat_interval(task.lease_expires_at), self.backoff.delay(misses))
                    misses += 1
                    self._log_retry("heartbeat", exc, interval)
                    continue
                misses = 0
                interval = beat_interval(lease_from(answer))
        finally:
            stopper.cancel()

    def _drop(self, task: Task, exc: ApiError) -> None:
        self._log_void(task, exc)
        task.stop(exc.code)
        self.stats.abandoned += 1
        self.after_void(exc)

    async def _report(self, task: Task, call: api.Call) -> None:
        """Send a completion or failure until acknowledged (same generation)."""
        completing = call.path.endswith("/complete")
        attempt, retried = 0, False
        while True:
            try:
                await self._send(call)
            except ClientError as exc:
                verdict = settle(exc, retried, completing)
                if verdict is Settle.RETRY:
                    delay = self.backoff.delay(attempt)
                    attempt, retried = attempt + 1, True
                    self._log_retry(call.path.rsplit("/", 1)[-1], exc, delay)
                    await asyncio.sleep(delay)  # a result is never given up for a stop
                    continue
                assert isinstance(exc, ApiError)
                if verdict is Settle.REFUSED_RESULT:
                    text = f"the server refused the result: {exc.message}"
                    call = api.fail(task.task_id, task.generation, text)
                    completing, attempt, retried = False, 0, False
                    continue
                if verdict is Settle.VOID:
                    self._drop(task, exc)
                    return
            if completing:
                self.stats.completed += 1
            else:
                self.stats.failed += 1
            return

    # --- stopping -----------------------------------------------------------------------

    async def _goodbye(self) -> None:
        held = self.handing_back
        if self.token is None:  # stopped before it ever registered: nothing to hand back
            return
        try:
            if self.leave_on_stop:
                await self._send_soon(api.leave(self.agent_id), "leave")
                log.info("agent %s left the fleet", self.agent_id)
            else:
                if held is None:
                    data = await self._send(api.poll(self.agent_id, 0))
                    held = Task.from_assignment(data) if isinstance(data, dict) else None
                if held is not None:
                    call = api.fail(held.task_id, held.generation, STOPPED_TEXT)
                    await self._send_soon(call, "fail")
            if held is not None:
                self.stats.handed_back += 1
        except ClientError as exc:
            log.warning("agent %s could not hand back its work: %s", self.agent_id, exc)

    async def _send_soon(self, call: api.Call, what: str, tries: int = 5) -> Any:
        for attempt in range(tries):
            try:
                return await self._send(call)
            except ClientError as exc:
                if not transient(exc) or attempt == tries - 1:
                    raise
                delay = self.backoff.delay(attempt)
                self._log_retry(what, exc, delay)
                await asyncio.sleep(delay)
        return None


async def _call(handler: AsyncHandler, task: Task) -> Any:
    """Run the handler: a coroutine function on the loop, a plain one in a thread."""
    if inspect.iscoroutinefunction(handler):
        return await handler(task)
    value = await asyncio.to_thread(handler, task)
    if inspect.isawaitable(value):
        value = await value
    return value
