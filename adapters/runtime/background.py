"""The runtime's background writer: the thread that runs submitted commands in group
commits, and fires deadlines between them.

Callers ``submit`` commands from any thread; each gets a future. The writer thread
drains what has queued up (at most ``max_batch``), hands it to
``SchedulerRuntime.execute_batch`` as one group commit, and settles every future with
its command's result. When nothing comes, it runs the runtime's quiet round (a pass
if a deadline is due, a probe of a failed store) at the earliest deadline or every
``poll_interval``. On PostgreSQL a second thread listens for other writers' appends
and wakes it to catch up.

It decides nothing itself and holds no state of the scheduler: the runtime does both,
under its lock. What it owns is the inbox, its threads and what becomes of each
future: a command handed on to the leader is settled by the leader's answer, one whose
caller gave up is not run, and one still queued at ``stop()`` fails.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from functools import partial
from typing import Any, Protocol

from tierlog.adapters.runtime.cluster import ClusterNode
from tierlog.adapters.store.event_log import EventLog
from tierlog.adapters.store.notify import follow_appends
from tierlog.domain import commands as cmd
from tierlog.domain.errors import CommandWithdrawnError

MAX_ATTEMPTS = 50
"""How often one batch is decided again after forwarded commands were withdrawn."""
# A command for the writer: its future, and its inbox id if another node forwarded it.
Item = tuple[cmd.Command, Future[Any], int | None]


class Decider(Protocol):
    """What the background writer drives (``SchedulerRuntime``): it decides, appends
    and keeps the state; the writer only says when."""

    @property
    def log(self) -> EventLog:
        """The log the decisions are appended to."""

    @property
    def node(self) -> ClusterNode | None:
        """This node's part among several on one PostgreSQL log (None: the only one)."""

    @property
    def is_leader(self) -> bool:
        """Whether this node decides (a follower hands its commands on)."""

    def apply_role_request(self) -> None:
        """Lead or follow, as the cluster last asked (between batches)."""

    def wait_time(self, poll_interval: float) -> float:
        """How long the writer may wait for a command before a deadline is due."""

    def quiet_round(self) -> None:
        """What to do when no command came (a due pass, a store retry, housekeeping)."""

    def housekeep(self) -> None:
        """What to do between batches (checkpoints, stale deadlines)."""

    def guarded(self, work: Callable[[], Any]) -> None:
        """Run ``work``, reporting a failure instead of raising it."""

    def report_failure(self, what: str, exc: Exception) -> None:
        """Log a failure of the writer's ``what``."""

    def catch_up(self) -> int:
        """Fold what other writers appended."""

    def execute_batch(
        self, commands: Sequence[cmd.Command], inbox_ids: Sequence[int | None] = ()
    ) -> list[Any]:
        """Decide and append ``commands`` as one group commit; a result per command."""


class BackgroundWriter:
    """The writer thread of one ``SchedulerRuntime`` (and its listener on PostgreSQL)."""

    def __init__(self, runtime: Decider, poll_interval: float, max_batch: int) -> None:
        """A writer for ``runtime``, not started: commands queue up until ``start()``."""
        self.runtime = runtime
        self.poll_interval = poll_interval
        self.max_batch = max_batch
        self._inbox: queue.SimpleQueue[Item | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether the writer thread runs and has not been told to stop."""
        return self._thread is not None and not self._stop.is_set()

    def submit(self, command: cmd.Command) -> Future[Any]:
        """Queue ``command`` for the next group commit; its future gets the result (or
        the error it failed with, as a value)."""
        future: Future[Any] = Future()
        self._inbox.put((command, future, None))
        return future

    def wake(self) -> None:
        """Make the writer look again now (any thread): a pass, and a role request."""
        self._inbox.put((cmd.RunSchedulingPass(), Future(), None))

    def start(self) -> None:
        """Start the writer thread (and, on PostgreSQL, the listener); once."""
        if self._thread is not None:
            return
        self._stop.clear()
        if self.runtime.log.is_postgres:
            # Another writer appended: wake the writer to catch up.
            self._listener = threading.Thread(
                target=follow_appends,
                args=(self.runtime.log, self._stop, self.wake),
                name="tierlog-listen",
                daemon=True,
            )
            self._listener.start()
        self._thread = threading.Thread(target=self._run, name="tierlog-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the threads once the batch in hand is done; commands still queued stay
        queued (``fail_queued``)."""
        self._stop.set()
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._listener is not None:
            self._listener.join()
            self._listener = None

    def fail_queued(self) -> None:
        """Fail every command still queued: the writer will not run them."""
        stopped = RuntimeError("the scheduler runtime stopped before running this command")
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is not None and item[1].set_running_or_notify_cancel():
                item[1].set_exception(stopped)

    def _run(self) -> None:
        runtime = self.runtime
        while not self._stop.is_set():
            runtime.apply_role_request()
            batch = self._drain(runtime.wait_time(self.poll_interval))
            if runtime.node is not None:
                batch = self._with_forwarded(batch)
            if batch:
                self._run_batch(batch)
                runtime.guarded(runtime.housekeep)
            elif not self._stop.is_set():
                runtime.quiet_round()

    def _run_batch(self, batch: list[Item]) -> None:
        for _ in range(MAX_ATTEMPTS):
            try:
                results = self._execute_items(batch)
                if results is None:
                    return  # handed on to the leader
            except CommandWithdrawnError:
                # A follower stopped waiting for one of the forwarded commands before it
                # was committed: nothing was appended; decide again without it.
                node = self.runtime.node
                assert node is not None
                gone = node.withdrawn_of([i for _, _, i in batch if i is not None])
                for _, future, inbox_id in batch:
                    if inbox_id in gone:
                        future.cancel()
                batch = [item for item in batch if item[2] not in gone]
                continue
            except Exception as exc:  # every caller in this commit hears of it
                self.runtime.report_failure("scheduler batch failed", exc)
                for _, future, _ in batch:
                    future.set_exception(exc)
                return
            for (_, future, _), result in zip(batch, results, strict=True):
                future.set_result(result)
            return

    def _execute_items(self, batch: list[Item]) -> list[Any] | None:
        runtime = self.runtime
        node = runtime.node
        if node is not None and not runtime.is_leader:
            # Lost the lease with commands in hand: this node's own go to the leader now;
            # forwarded ones stay in the inbox for it.
            for command, future, inbox_id in batch:
                if isinstance(command, cmd.RunSchedulingPass):
                    future.set_result(None)  # a wake-up: a follower only catches up
                elif inbox_id is None:
                    node.forward(command).add_done_callback(partial(_settle, future))
                else:
                    future.cancel()
            runtime.catch_up()
            return None
        commands = [command for command, _, _ in batch]
        inbox_ids = [inbox_id for _, _, inbox_id in batch]
        return runtime.execute_batch(commands, inbox_ids)

    def _with_forwarded(self, batch: list[Item]) -> list[Item]:
        node = self.runtime.node
        assert node is not None
        if not self.runtime.is_leader or len(batch) >= self.max_batch:
            return batch
        try:
            taken = node.take_forwarded(self.max_batch - len(batch))
        except Exception as exc:  # the next round tries again
            self.runtime.report_failure("reading forwarded commands failed", exc)
            return batch
        return batch + [(command, future, inbox_id) for command, future, inbox_id in taken]

    def _drain(self, wait: float) -> list[Item]:
        """Take up to ``max_batch`` commands whose callers still want them."""
        batch: list[Item] = []
        try:
            item = self._inbox.get(timeout=wait) if wait > 0 else self._inbox.get_nowait()
        except queue.Empty:
            return batch
        while item is not None:
            # A caller that cancelled (say, an HTTP client timed out) gets nothing run.
            if item[1].set_running_or_notify_cancel():
                batch.append(item)
            if len(batch) >= self.max_batch:
                break
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
        return batch


def _settle(future: Future[Any], done: Future[Any]) -> None:
    """Give ``future`` the result of ``done`` (a command handed on to the leader)."""
    future.set_result(done.result())
