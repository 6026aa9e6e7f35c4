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

The background writer (``background.py``) is the thread that feeds it: it owns the
inbox of submitted commands and their futures, and drives this runtime through the
calls ``Decider`` names.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from tierlog.adapters.runtime.background import BackgroundWriter
from tierlog.adapters.runtime.checkpoints import SchedulerCheckpoints
from tierlog.adapters.runtime.cluster import ClusterNode, encode_answer
from tierlog.adapters.runtime.ids import new_task_id as time_ordered_id
from tierlog.adapters.runtime.recall import StoreRecall
from tierlog.adapters.settings import MAX_BATCH, READ_BATCH, STORE_RETRY_S, WRITER_POLL_S
from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import commands as cmd
from tierlog.domain import events as ev
from tierlog.domain.clock import Clock
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.errors import (
    ConcurrencyConflictError,
    DomainError,
    NotLeaderError,
    StoreUnavailableError,
    TierlogError,
)
from tierlog.domain.limits import CommandLimits
from tierlog.domain.service import SchedulerService
from tierlog.domain.state import SchedulerState
from tierlog.domain.unit_of_work import UnitOfWork
from tierlog.domain.working_set import Retention

T = TypeVar("T")
_ENDPOINT_EVENTS = (
    ev.EndpointRegistered,
    ev.EndpointHealthReported,
    ev.EndpointResourcesReported,
    ev.EndpointDeregistered,
)
Listener = Callable[[Sequence[tuple[int, ev.DomainEvent]]], None]
# Takes a committed run of events and the position just before it; False: not taken.
HandOff = Callable[[int, Sequence[tuple[int, ev.DomainEvent]]], bool]
MAX_ATTEMPTS = 50
"""How often a batch is decided again after losing a version race to another writer."""


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
        new_task_id: Callable[[], UUID] = time_ordered_id,
        read_batch: int = READ_BATCH,
        record_config: bool = True,
        poll_interval: float = WRITER_POLL_S,
        max_batch: int = MAX_BATCH,
        limits: CommandLimits | None = None,
        store_retry_s: float = STORE_RETRY_S,
        retention: Retention | None = None,
        checkpoints: SchedulerCheckpoints | None = None,
    ) -> None:
        self.log = event_log
        self.config = config
        self.clock = clock
        self.service = SchedulerService(
            config,
            SchedulerState(config.task_ttl_s, retention=retention),
            new_task_id=new_task_id,
            limits=limits,
            check_events=event_log.check_events,
        )
        self.state = self.service.state
        self.recall = StoreRecall(event_log)
        """Finds records that left memory (``retention``) in the store, by key."""
        self.checkpoints = checkpoints
        """Where the state starts from and is checkpointed to (None: fold from 0)."""
        self.read_batch = read_batch
        self.record_config = record_config
        self.store_retry_s = store_retry_s
        self.store_fault: StoreFault | None = None
        """Set while the store fails (the last append or read hit a storage fault)."""
        self._next_retry = 0.0
        self.conflicts = 0
        self.commits = 0
        self._started = False
        self._lock = threading.RLock()
        self.background = BackgroundWriter(self, poll_interval, max_batch)
        """The thread that runs ``submit``ted commands (``start_background``)."""
        self.node: ClusterNode | None = None
        """This node's part among several on one PostgreSQL log (None: the only writer)."""
        self._role_request: tuple[str, int, str] | None = None
        self._listeners: list[Listener] = []
        self._hand_off: HandOff | None = None
        # On a follower: when each agent's presence was last relayed to the leader.
        self._relayed: dict[str, datetime] = {}

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
                self.load()
                # Who polled the last process is not in the log: count from now.
                self.service.presence.restart(self.clock.now())
                if self.node is not None:
                    # One node of several: it leads if the lease is free, else follows.
                    epoch = self.node.try_lead()
                    if epoch is not None:
                        self._lead(epoch, at_start=True)
                    self.node.start()  # keeps the lease from now on, or watches it
                    return
                if self.record_config:
                    # Replays and audits recompute decisions under the policy that made them.
                    self.execute(cmd.RecordConfiguration())  # a refusal stops the start
                else:
                    self.tick()
            except BaseException:
                self._started = False
                raise

    def load(self) -> int:
        """Bring the state to the log's head, appending nothing: from the newest
        checkpoint that matches the log (if checkpoints are kept and the state is still
        empty), then the events after it. Returns the events folded."""
        with self._lock:
            retention = self.state.retention
            if self.checkpoints is not None and retention is not None and not self.state.position:
                restored = self.checkpoints.restore(self.config.task_ttl_s, retention)
                if restored is not None:
                    self.state = self.service.state = restored
            return self.catch_up()

    def housekeep(self) -> None:
        """Between batches: drop stale deadlines once they outnumber live ones, and hand
        a checkpoint to the background writer when one is due (the leader's)."""
        with self._lock:
            state = self.state
            self._compact_deadlines()
            checkpoints = self.checkpoints
            if checkpoints is not None and self.is_leader and checkpoints.due(state.position):
                checkpoints.offer(state)

    def _compact_deadlines(self) -> None:
        # Every lease and TTL leaves a heap entry that goes stale: drop them once they
        # outnumber the live ones by far (outside any unit of work: callers hold the lock).
        if self.state.deadlines_mostly_stale():
            self.state.compact_deadlines()

    def _last_checkpoint(self) -> None:
        assert self.checkpoints is not None
        with self._lock:
            if self.checkpoints.behind(self.state.position):
                self.checkpoints.offer(self.state)  # so the next start folds no tail

    def memory(self) -> dict[str, Any]:
        """What the state holds (tasks, agents, endpoints, settled records waiting to
        leave), the store lookups of records that left, and the checkpoints' status."""
        state = self.state
        return {
            "tasks": len(state.tasks),
            "agents": len(state.agents),
            "endpoints": len(state.endpoints),
            "settled": len(state.settled),
            "recalled_lookups": self.recall.lookups,
            "checkpoints": None if self.checkpoints is None else self.checkpoints.status.as_dict(),
        }

    # --- leading and following (several nodes on one PostgreSQL log) -------------------

    def attach(self, node: ClusterNode) -> None:
        """Run as one node of several: lead only while holding the lease, else follow
        and forward commands (before ``start()``)."""
        self.node = node
        node.runtime = self

    @property
    def is_leader(self) -> bool:
        """Whether this runtime decides (the only writer, or the elected leader)."""
        return self.node is None or self.node.is_leader

    def request_leadership(self, epoch: int) -> None:
        """The lease was taken under ``epoch``: lead, once the writer thread is between
        batches (any thread)."""
        self._role_request = ("lead", epoch, "")
        self.wake()

    def request_step_down(self, why: str) -> None:
        """The lease was lost: stop deciding (any thread)."""
        self._role_request = ("follow", 0, why)
        self.wake()

    def wake(self) -> None:
        """Wake the background writer (any thread)."""
        self.background.wake()

    def apply_role_request(self) -> None:
        """Lead or follow as the cluster node last asked (``request_leadership``,
        ``request_step_down``); the background writer calls it between batches."""
        request, self._role_request = self._role_request, None
        if request is None or self.node is None:
            return
        with self._lock:
            kind, epoch, why = request
            if kind == "follow":
                self._follow(why)
            elif not self.node.is_leader:
                self._lead(epoch)

    def _lead(self, epoch: int, *, at_start: bool = False) -> bool:
        """Record this node's election (fenced by ``epoch``), then the configuration and
        a pass (overdue timers fire, once). False, still a follower, if it was refused."""
        assert self.node is not None
        self.catch_up()
        # Polls went to the old leader (or any node): every agent counts as heard now.
        self.service.presence.restart(self.clock.now())
        self.log.fence = (self.node.node_id, epoch)
        self.node.led(epoch, took_over=not at_start)
        election = cmd.RecordLeaderElection(node_id=self.node.node_id, epoch=epoch)
        try:
            result = self._decide_and_append([election])[0]
            if isinstance(result, TierlogError):
                self._follow(f"the election was not recorded: {result.message}")
                return False
            if self.record_config:
                self.execute(cmd.RecordConfiguration())  # a refusal stops the start
        except NotLeaderError as exc:
            self._follow(exc.message)
            return False
        return True

    def _follow(self, why: str) -> None:
        if self.node is not None:
            self.node.deposed(why)
        self.log.fence = None

    def catch_up_to(self, position: int) -> None:
        """Fold the log up to at least ``position`` (a follower, before it answers with
        the leader's position)."""
        if self.state.position >= position:
            return
        with self._lock:
            self.catch_up()

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
            state = self.state
            recall = self.recall.for_event if state.retention is not None else None
            while True:
                # Records handed back (or evicted) are for the decision or fold at hand:
                # dropped each round, so a long fold holds no more than a chunk's.
                state.recalled.clear()
                after = state.position
                chunk = self.log.read(after, self.read_batch)
                for position, event in chunk:
                    if recall is not None:
                        recall(state, event, position)
                    state.apply(event, position)
                applied += len(chunk)
                self._notify(chunk, after)
                if len(chunk) < self.read_batch:
                    return applied
                self._compact_deadlines()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` (on the writer's thread) with every event the state folds in.

        Listeners must be quick and must not call back into the runtime: the HTTP edge
        uses one to wake long-polls, the projection runner one to wake up at once.
        """
        self._listeners.append(listener)

    def hand_off_to(self, hand_off: HandOff | None) -> None:
        """Give every run of events the state folds in (committed by this writer, or
        read from the log) to ``hand_off`` as well, with the position the state stood
        at just before it: the log holds nothing in between. Called on the writer's
        thread; it must never block (``HandOver.offer``: the projection runner's)."""
        self._hand_off = hand_off

    def _notify(self, applied: Sequence[tuple[int, ev.DomainEvent]], after: int) -> None:
        if not applied:
            return
        if self._hand_off is not None:
            try:
                self._hand_off(after, applied)
            except Exception:  # the runner reads the store instead
                log.exception("handing events over to the projection runner failed")
        for listener in self._listeners:
            try:
                listener(applied)
            except Exception:  # a listener's bug must not stop the scheduler
                log.exception("runtime listener failed")

    def heard(self, agent_id: str, *, polling: bool | None = None) -> None:
        """An agent polled or heartbeated here now (in memory: a poll appends nothing;
        the liveness sweep of the next passes reads it); ``polling`` True or False when
        a long-poll begins or ends. On a follower, the leader is told too (a
        ``CheckInAgent``, at most every third of the idle timeout per agent)."""
        now = self.clock.now()
        presence = self.service.presence
        if polling is None:
            presence.heard(agent_id, now)
        elif polling:
            presence.poll_started(agent_id, now)
        else:
            presence.poll_ended(agent_id, now)
        if self.node is not None and not self.is_leader:
            self._relay_presence(agent_id, now)

    def _relay_presence(self, agent_id: str, now: datetime) -> None:
        last = self._relayed.get(agent_id)
        every = self.config.agent_idle_timeout_s / 3
        if last is not None and (now - last).total_seconds() < every:
            return
        self._relayed[agent_id] = now
        assert self.node is not None
        # Fire and forget: a lost relay only makes the leader hear of the agent later.
        self.node.forward(cmd.CheckInAgent(agent_id=agent_id))

    def _next_wake(self) -> float | None:
        """The earliest deadline or liveness sweep due (a POSIX timestamp), if any."""
        deadline = self.state.next_deadline()
        due = self.state.liveness_due
        if due is None or not self.state.idle_agents:
            return deadline
        sweep = due.timestamp()
        return sweep if deadline is None else min(deadline, sweep)

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

    def execute_batch(
        self, commands: Sequence[cmd.Command], inbox_ids: Sequence[int | None] = ()
    ) -> list[Any]:
        """Run commands as one group commit; each result is a value or the error its
        command failed with (a ``DomainError``; a fault inside tierlog, logged with its
        traceback, fails its command alone). ``inbox_ids`` names the commands other
        nodes forwarded: their answers commit with the events."""
        results = self._decide_and_append(commands, inbox_ids)
        for command, result in zip(commands, results, strict=True):
            if isinstance(result, TierlogError) and not isinstance(result, DomainError):
                log.error(
                    "%s: %s", command.verb, result.message, exc_info=result.__cause__ or result
                )
        return results

    def _decide_and_append(
        self, commands: Sequence[cmd.Command], inbox_ids: Sequence[int | None] = ()
    ) -> list[Any]:
        self._require_started()
        with self._lock:
            self._require_leader()
            for _ in range(MAX_ATTEMPTS):
                self.catch_up()
                self.recall.for_commands(self.state, commands)
                now = self.clock.now()
                with UnitOfWork(self.state) as uow:
                    results = self.service.handle_all(uow, commands, now)
                    answers = [
                        (inbox_id, encode_answer(result))
                        for inbox_id, result in zip(inbox_ids, results, strict=False)
                        if inbox_id is not None
                    ]
                    if any(isinstance(e, _ENDPOINT_EVENTS) for e in uow.events):
                        # Routing decisions cite the log position of the endpoint state
                        # they read, so endpoint changes are committed before the pass
                        # reads them. Once committed, only the pass may be retried.
                        if not self._append(uow, answers):
                            continue
                        self._schedule_committed(now)
                        return results
                    self.service.schedule(uow, now)
                    if self._append(uow, answers):
                        return results
            raise ConcurrencyConflictError(f"gave up after {MAX_ATTEMPTS} conflicting attempts")

    def _require_leader(self) -> None:
        if not self.is_leader:
            raise NotLeaderError("this node is a follower: the leader decides; retry")

    def tick(self) -> int:
        """Run a scheduling pass now (deadlines due, queue); returns events appended (a
        follower decides nothing: 0)."""
        self._require_started()
        if not self.is_leader:
            return 0
        with self._lock:
            before = self.state.position
            self._schedule(self.clock.now())
            return self.state.position - before

    def tick_if_needed(self) -> int:
        """Catch up; run a pass only if other writers appended or a deadline is due."""
        with self._lock:
            caught_up = self.catch_up()
            if not self.is_leader:
                return 0
            deadline = self._next_wake()
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

    def _append(self, uow: UnitOfWork, answers: Sequence[tuple[int, bytes]] = ()) -> bool:
        """Append the unit of work (and the answers to forwarded commands, in the same
        transaction) and commit it. False (state rolled back) if the batch must be
        decided again. Whatever fails (a store error, a bug), leaving the unit of work's
        block uncommitted rolls the state back: it must not keep events the log does not
        have, or it would drift from the log for good. ``NotLeaderError`` (the lease was
        lost) also makes this node a follower."""
        try:
            if not uow.events:
                if answers:
                    self.log.complete_inbox(answers, self.state.position)
                uow.commit()
                return True
            # Forwarded commands' answers ride along only when there are any.
            positions = (
                self.log.append(uow.events, inbox=answers)
                if answers
                else self.log.append(uow.events)
            )
        except ConcurrencyConflictError:
            self.conflicts += 1
            if self.conflicts % 100 == 1:  # the first, then one line per hundred
                log.warning(
                    "an append lost a version race to another writer (%d so far); deciding "
                    "again (on PostgreSQL only an elected leader should append)",
                    self.conflicts,
                )
            uow.rollback()
            return False
        except NotLeaderError:
            if self.node is not None:
                self.node.fenced += 1
            self._follow("an append was fenced off")
            raise
        except StoreUnavailableError as exc:
            self._store_failed(exc)
            raise
        self._store_recovered()
        self.commits += 1
        expected = list(range(uow.first_position, uow.first_position + len(uow.events)))
        if positions == expected:
            applied = list(zip(positions, uow.events, strict=True))
            uow.commit()
            self._notify(applied, uow.first_position - 1)
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

    # --- the background writer ------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the background writer is running."""
        return self.background.running

    def submit(self, command: cmd.Command) -> Future[Any]:
        """Queue a command for the background writer; concurrent callers share a commit."""
        if not self.background.running:
            raise RuntimeError(
                "the scheduler runtime is not running: call start_background() first"
            )
        if not self.is_leader and self.node is not None:
            return self.node.forward(command)
        return self.background.submit(command)

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
        self.background.start()

    def stop(self) -> None:
        """Stop the background writer; commands still queued fail with RuntimeError. A
        cluster node then gives its lease up (after the writer's last batch committed)."""
        self.background.stop()
        if self.checkpoints is not None:
            if self._started and self.is_leader:
                self.guarded(self._last_checkpoint)
            self.checkpoints.close()
        if self.node is not None:
            self.node.stop()
        self.background.fail_queued()

    def wait_time(self, poll_interval: float) -> float:
        """How long the background writer may wait for a command: until the earliest
        deadline or liveness sweep (a follower fires none), at most ``poll_interval``."""
        if not self.is_leader:
            return poll_interval
        with self._lock:
            deadline = self._next_wake()
        if deadline is None:
            return poll_interval
        return max(0.0, min(poll_interval, deadline - self.clock.now().timestamp()))

    def quiet_round(self) -> None:
        """What the background writer does when no command came: the pass if a deadline
        is due (or, while the store fails, a retry when one is due), then housekeeping."""
        if self.store_fault is None:
            self.guarded(self.tick_if_needed)
        elif time.monotonic() >= self._next_retry:
            self.guarded(self.retry_store)
        self.guarded(self.housekeep)

    def guarded(self, work: Callable[[], Any]) -> None:
        """Run ``work`` for the background writer; a failure is reported, not raised (the
        next round tries again; the loop must not die)."""
        try:
            work()
        except Exception as exc:
            self.report_failure("scheduler pass failed", exc)

    def report_failure(self, what: str, exc: Exception) -> None:
        """Log a failure of the background writer's ``what``: a storage fault once per
        outage (and the runtime reports it until the store recovers), a lost lease as
        news, anything else with its traceback."""
        if isinstance(exc, StoreUnavailableError):
            self._store_failed(exc)
        elif isinstance(exc, NotLeaderError):  # expected: the node said it stepped down
            log.info("%s: %s", what, exc.message)
        else:
            log.exception(what)
