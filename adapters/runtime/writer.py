"""The imperative shell: follows the log, runs commands, appends, wakes on deadlines.

State is touched only under ``_lock``. A batch of commands is decided against the
state (events applied at once through a unit of work), then appended in one
transaction: that is the group commit. If the append loses a version race, or other
writers appended in between, the state is rolled back, caught up from the log, and
the batch decided again.

A fault of the storage (disk full, read-only, I/O error, connection lost) fails the
batch whose commit failed, and only it: its callers hear ``StoreUnavailableError``,
the state is rolled back, and the runtime reports ``store_fault`` until the store takes
a write again. Meanwhile the loop retries the scheduling pass and probes the store
every ``store_retry_s``, so it recovers by itself when space returns.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID, uuid4

from tierlog.adapters.settings import MAX_BATCH, READ_BATCH, STORE_RETRY_S, WRITER_POLL_S
from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import commands as cmd
from tierlog.domain import events as ev
from tierlog.domain.clock import Clock
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.errors import (
    ConcurrencyConflictError,
    DomainError,
    StoreUnavailableError,
    TierlogError,
)
from tierlog.domain.limits import CommandLimits
from tierlog.domain.service import SchedulerService
from tierlog.domain.state import SchedulerState
from tierlog.domain.unit_of_work import UnitOfWork

T = TypeVar("T")
_ENDPOINT_EVENTS = (
    ev.EndpointRegistered,
    ev.EndpointHealthReported,
    ev.EndpointResourcesReported,
    ev.EndpointDeregistered,
)
Listener = Callable[[Sequence[tuple[int, ev.DomainEvent]]], None]
MAX_ATTEMPTS = 50


log = logging.getLogger("tierlog.runtime")


@dataclass(frozen=True)
class StoreFault:
    """Why the store fails now (``reason`` for anyone, ``detail`` with where, for the
    operator's log), and since when (wall-clock time)."""

    reason: str
    detail: str
    since: datetime


class SchedulerRuntime:
    """One process's scheduler over a shared log.

    Constructing one touches nothing: ``start()`` catches up with the log, records the
    configuration and runs the first scheduling pass (so overdue timers fire there);
    commands run only after it. ``start_background()`` also runs the background writer
    (``submit``/``call``), until ``stop()``.
    """

    def __init__(
        self,
        event_log: EventLog,
        config: SchedulerConfig,
        clock: Clock,
        *,
        new_task_id: Callable[[], UUID] = uuid4,
        read_batch: int = READ_BATCH,
        record_config: bool = True,
        poll_interval: float = WRITER_POLL_S,
        max_batch: int = MAX_BATCH,
        limits: CommandLimits | None = None,
        store_retry_s: float = STORE_RETRY_S,
    ) -> None:
        self.log = event_log
        self.config = config
        self.clock = clock
        self.service = SchedulerService(
            config, new_task_id=new_task_id, limits=limits, check_events=event_log.check_events
        )
        self.state = self.service.state
        self.read_batch = read_batch
        self.record_config = record_config
        self.poll_interval = poll_interval
        self.max_batch = max_batch
        self.store_retry_s = store_retry_s
        self.store_fault: StoreFault | None = None
        """Set while the store fails (the last append or read hit a storage fault)."""
        self._next_retry = 0.0
        self.conflicts = 0
        self.commits = 0
        self._started = False
        self._lock = threading.RLock()
        self._inbox: queue.SimpleQueue[tuple[cmd.Command, Future[Any]] | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._listeners: list[Listener] = []

    def start(self) -> None:
        """Bring the state up to date, in the caller's thread; once (later calls return).

        Catches up with the log, records the configuration (unless ``record_config`` is
        False) and runs a scheduling pass, which fires whatever fell due while no writer
        ran: overdue fallback timers, expired leases and TTLs. Does not start a thread.
        """
        with self._lock:
            if self._started:
                return
            self._started = True
            try:
                self.catch_up()
                if self.record_config:
                    # Replays and audits recompute decisions under the policy that made them.
                    self.execute(cmd.RecordConfiguration())  # a refusal stops the start
                else:
                    self.tick()
            except BaseException:
                self._started = False
                raise

    @property
    def started(self) -> bool:
        """Whether ``start()`` has brought the state up to date."""
        return self._started

    def _require_started(self) -> None:
        if not self._started:
            raise RuntimeError("the scheduler runtime has not caught up: call start() first")

    # --- following the log ----------------------------------------------------------

    def catch_up(self) -> int:
        """Apply every event appended after the state's position; returns how many."""
        applied = 0
        with self._lock:
            while True:
                chunk = self.log.read(self.state.position, self.read_batch)
                for position, event in chunk:
                    self.state.apply(event, position)
                applied += len(chunk)
                self._notify(chunk)
                if len(chunk) < self.read_batch:
                    return applied

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` (on the writer's thread) with every event the state folds in.

        Listeners must be quick and must not call back into the runtime: the HTTP edge
        uses one to wake long-polls, the projection runner one to wake up at once.
        """
        self._listeners.append(listener)

    def _notify(self, applied: Sequence[tuple[int, ev.DomainEvent]]) -> None:
        if not applied:
            return
        for listener in self._listeners:
            try:
                listener(applied)
            except Exception:  # a listener's bug must not stop the scheduler
                log.exception("runtime listener failed")

    def read(self, query: Callable[[SchedulerState], T]) -> T:
        """Run a read-only ``query`` against the state, safely against the writer thread."""
        with self._lock:
            return query(self.state)

    # --- running commands -----------------------------------------------------------

    def execute(self, command: cmd.Command) -> Any:
        """Run one command and a scheduling pass; raise its error if it fails."""
        result = self.execute_batch([command])[0]
        if isinstance(result, TierlogError):
            raise result
        return result

    def execute_batch(self, commands: Sequence[cmd.Command]) -> list[Any]:
        """Run commands as one group commit; each result is a value or the error its
        command failed with (a ``DomainError``; a fault inside tierlog, logged with its
        traceback, fails its command alone)."""
        results = self._decide_and_append(commands)
        for command, result in zip(commands, results, strict=True):
            if isinstance(result, TierlogError) and not isinstance(result, DomainError):
                log.error(
                    "%s: %s", command.verb, result.message, exc_info=result.__cause__ or result
                )
        return results

    def _decide_and_append(self, commands: Sequence[cmd.Command]) -> list[Any]:
        self._require_started()
        with self._lock:
            for _ in range(MAX_ATTEMPTS):
                self.catch_up()
                now = self.clock.now()
                with UnitOfWork(self.state) as uow:
                    results = self.service.handle_all(uow, commands, now)
                    if any(isinstance(e, _ENDPOINT_EVENTS) for e in uow.events):
                        # Routing decisions cite the log position of the endpoint state
                        # they read, so endpoint changes are committed before the pass
                        # reads them. Once committed, only the pass may be retried.
                        if not self._append(uow):
                            continue
                        self._schedule_committed(now)
                        return results
                    self.service.schedule(uow, now)
                    if self._append(uow):
                        return results
            raise ConcurrencyConflictError(f"gave up after {MAX_ATTEMPTS} conflicting attempts")

    def tick(self) -> int:
        """Run a scheduling pass now (deadlines due, queue); returns events appended."""
        self._require_started()
        with self._lock:
            before = self.state.position
            self._schedule(self.clock.now())
            return self.state.position - before

    def tick_if_needed(self) -> int:
        """Catch up; run a pass only if other writers appended or a deadline is due."""
        with self._lock:
            caught_up = self.catch_up()
            deadline = self.state.next_deadline()
            due = deadline is not None and deadline <= self.clock.now().timestamp()
            return self.tick() if caught_up or due else 0

    def _schedule(self, now: datetime) -> None:
        for _ in range(MAX_ATTEMPTS):
            self.catch_up()
            with UnitOfWork(self.state) as uow:
                self.service.schedule(uow, now)
                if self._append(uow):
                    return
        raise ConcurrencyConflictError(f"gave up after {MAX_ATTEMPTS} conflicting attempts")

    def _schedule_committed(self, now: datetime) -> None:
        """The pass after commands already committed: a storage fault here must not fail
        commands that are in the log (their callers would retry what was done); the
        loop decides the pass again once the store recovers."""
        try:
            self._schedule(now)
        except StoreUnavailableError:
            log.info("the pass after a commit waits for the store to recover")

    def _append(self, uow: UnitOfWork) -> bool:
        """Append the unit of work and commit it. False (state rolled back) if the batch
        must be decided again. Whatever fails (a store error, a bug), leaving the unit of
        work's block uncommitted rolls the state back: it must not keep events the log
        does not have, or it would drift from the log for good."""
        if not uow.events:
            uow.commit()
            return True
        try:
            positions = self.log.append(uow.events)
        except ConcurrencyConflictError:
            self.conflicts += 1
            uow.rollback()
            return False
        except StoreUnavailableError as exc:
            self._store_failed(exc)
            raise
        self._store_recovered()
        self.commits += 1
        expected = list(range(uow.first_position, uow.first_position + len(uow.events)))
        if positions == expected:
            applied = list(zip(positions, uow.events, strict=True))
            uow.commit()
            self._notify(applied)
        else:
            # Someone appended in between: our events are in the log, but the state
            # must fold them in log order, so undo and read them back.
            uow.rollback()
            self.catch_up()
        return True

    # --- storage faults -------------------------------------------------------------

    def _store_failed(self, exc: StoreUnavailableError) -> None:
        if self.store_fault is None:  # said once per outage, not once per request
            log.warning("the store fails; writes answer 503 until it recovers: %s", exc.message)
        self.store_fault = StoreFault(exc.reason, exc.message, datetime.now(UTC))
        self._next_retry = time.monotonic() + self.store_retry_s

    def _store_recovered(self) -> None:
        fault = self.store_fault
        if fault is not None:
            self.store_fault = None
            took = (datetime.now(UTC) - fault.since).total_seconds()
            log.warning("the store takes writes again (it failed for %.1f s)", took)

    def retry_store(self) -> None:
        """Decide the scheduling pass again (assignments and timers that a failed commit
        lost), then probe the store: either taking a write ends the fault."""
        self.tick()
        if self.store_fault is not None:
            self.log.probe()
            self._store_recovered()

    # --- background loop ------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the background writer is running."""
        return self._thread is not None and not self._stop.is_set()

    def submit(self, command: cmd.Command) -> Future[Any]:
        """Queue a command for the background writer; concurrent callers share a commit."""
        if self._stop.is_set() or self._thread is None:
            raise RuntimeError(
                "the scheduler runtime is not running: call start_background() first"
            )
        future: Future[Any] = Future()
        self._inbox.put((command, future))
        return future

    def call(self, command: cmd.Command) -> Any:
        """Run a command through the background writer and wait for its result."""
        result = self.submit(command).result()
        if isinstance(result, TierlogError):
            raise result
        return result

    def start_background(self) -> None:
        """``start()``, then the background writer thread: it runs submitted commands in
        group commits of at most ``max_batch``, fires deadlines, and catches up with other
        writers (polling every ``poll_interval`` s; woken by NOTIFY on PostgreSQL)."""
        self.start()
        if self._thread is not None:
            return
        self._stop.clear()
        if self.log.is_postgres:
            self._listener = threading.Thread(
                target=self._follow_notifications, name="tierlog-listen", daemon=True
            )
            self._listener.start()
        self._thread = threading.Thread(
            target=self._run,
            args=(self.poll_interval, self.max_batch),
            name="tierlog-scheduler",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the background writer; commands still queued fail with RuntimeError."""
        self._stop.set()
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._listener is not None:
            self._listener.join()
            self._listener = None
        stopped = RuntimeError("the scheduler runtime stopped before running this command")
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is not None and item[1].set_running_or_notify_cancel():
                item[1].set_exception(stopped)

    def _follow_notifications(self) -> None:
        # PostgreSQL tells us when another writer appends: wake the writer to catch up.
        while not self._stop.is_set():
            try:
                notified = self.log.wait_for_append(1.0)
            except Exception:  # the listener reconnects on the next round
                log.exception("LISTEN failed; reconnecting")
                self._stop.wait(1.0)
                continue
            if notified:
                self._inbox.put((cmd.RunSchedulingPass(), Future()))

    def _wait_time(self, poll_interval: float) -> float:
        with self._lock:
            deadline = self.state.next_deadline()
        if deadline is None:
            return poll_interval
        return max(0.0, min(poll_interval, deadline - self.clock.now().timestamp()))

    def _run(self, poll_interval: float, max_batch: int) -> None:
        while not self._stop.is_set():
            batch = self._drain(self._wait_time(poll_interval), max_batch)
            if not batch:
                if self._stop.is_set():
                    continue
                if self.store_fault is None:
                    self._guarded(self.tick_if_needed)
                elif time.monotonic() >= self._next_retry:
                    self._guarded(self.retry_store)
                continue
            try:
                results = self.execute_batch([command for command, _ in batch])
            except Exception as exc:  # every caller in this commit hears of it
                self._failed("scheduler batch failed", exc)
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                future.set_result(result)

    def _guarded(self, work: Callable[[], Any]) -> None:
        try:
            work()
        except Exception as exc:  # the next round tries again; the loop must not die
            self._failed("scheduler pass failed", exc)

    def _failed(self, what: str, exc: Exception) -> None:
        if isinstance(exc, StoreUnavailableError):  # expected, and said once per outage
            self._store_failed(exc)
        else:
            log.exception(what)

    def _drain(self, wait: float, max_batch: int) -> list[tuple[cmd.Command, Future[Any]]]:
        """Take up to ``max_batch`` commands whose callers still want them."""
        batch: list[tuple[cmd.Command, Future[Any]]] = []
        try:
            item = self._inbox.get(timeout=wait) if wait > 0 else self._inbox.get_nowait()
        except queue.Empty:
            return batch
        while item is not None:
            # A caller that cancelled (say, an HTTP client timed out) gets nothing run.
            if item[1].set_running_or_notify_cancel():
                batch.append(item)
            if len(batch) >= max_batch:
                break
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
        return batch
