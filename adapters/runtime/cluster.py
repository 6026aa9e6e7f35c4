"""One ``serve`` node among several on one PostgreSQL log: leader or follower.

The nodes elect one leader through the lease row of ``tierlog.adapters.store.cluster``.
The leader alone decides and appends (its appends are fenced by its epoch); a
follower folds the log, serves reads from it, and forwards every command to the
leader through the inbox table, then answers with the leader's position once its own
state has caught up to it (read-your-writes on every node).

Three threads per node: the lease keeper (renews the lease, or takes it when it has
expired, and records the node's heartbeat), the sender (inserts forwarded commands),
and the listener (LISTENs for forwarded commands, which wake the leader's writer, and
for answers, which complete the follower's waiting callers; it also polls, so a lost
notification only delays). Role changes are carried out by the runtime's writer
thread, under its lock: never half-way through a batch.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Protocol

import msgspec
import psycopg

from tierlog.adapters.store.cluster import DONE_CHANNEL, INBOX_CHANNEL, ClusterStore, NodeView
from tierlog.adapters.store.event_log import EventLog, postgres_connect_args
from tierlog.domain import commands as cmd
from tierlog.domain import errors
from tierlog.domain.service import SubmitResult
from tierlog.domain.state import SchedulerState

log = logging.getLogger("tierlog.cluster")

LEADER, FOLLOWER = "leader", "follower"
POLL_S = 0.1
"""How often the listener polls for answers and forwarded commands between
notifications."""
MAX_FORWARD_BATCH = 500
"""The most commands one INSERT forwards."""
PRUNE_AFTER_S = 600.0
"""Answered inbox rows are kept this long (for a follower that was slow to read)."""

# What each command returns, to decode a forwarded command's answer (the rest: None).
RESULT_TYPES: dict[str, Any] = {
    cmd.SubmitTask.verb: SubmitResult,
    cmd.RetryTask.verb: int,
    cmd.HeartbeatTask.verb: datetime,
    cmd.FailTask.verb: str,
    cmd.RegisterEndpoint.verb: str,
    cmd.ReportHealth.verb: str,
    cmd.RecordConfiguration.verb: bool,
    cmd.RecordLeaderElection.verb: int,
}


class _Answer(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A forwarded command's answer as the inbox stores it: a value or an error."""

    value: msgspec.Raw = msgspec.Raw(b"null")
    error: str | None = None
    message: str = ""
    field: str | None = None


_ENCODER = msgspec.json.Encoder()


def encode_answer(result: Any) -> bytes:
    """A command's result (a value, or the ``TierlogError`` it failed with) for the inbox."""
    if isinstance(result, errors.TierlogError):
        error = _Answer(error=type(result).__name__, message=result.message, field=result.field)
        return _ENCODER.encode(error)
    return _ENCODER.encode(_Answer(value=msgspec.Raw(_ENCODER.encode(result))))


def decode_answer(verb: str, data: bytes) -> Any:
    """The result (or error) of a forwarded command, as the leader answered it."""
    answer = msgspec.json.decode(data, type=_Answer)
    if answer.error is not None:
        error_type = _ERROR_TYPES.get(answer.error, errors.InternalError)
        if issubclass(error_type, errors.StoreUnavailableError):
            return error_type(answer.message)
        return error_type(answer.message, field=answer.field)
    kind = RESULT_TYPES.get(verb)
    if kind is None:
        return None
    return msgspec.json.decode(answer.value, type=kind)


def _error_types() -> dict[str, type[errors.TierlogError]]:
    found: dict[str, type[errors.TierlogError]] = {}
    pending: list[type[errors.TierlogError]] = [errors.TierlogError]
    while pending:
        kind = pending.pop()
        found[kind.__name__] = kind
        pending.extend(kind.__subclasses__())
    return found


_ERROR_TYPES = _error_types()


def encode_command(command: cmd.Command) -> tuple[str, bytes]:
    """A command as the inbox carries it: its verb and its fields as JSON."""
    return command.verb, command.model_dump_json().encode()


def decode_command(verb: str, body: bytes) -> cmd.Command:
    """A forwarded command, validated again (a ``ValidationError`` if it is not one)."""
    kind = cmd.COMMANDS.get(verb)
    if kind is None:
        raise errors.ValidationError(f"unknown command {verb!r}", field="verb")
    try:
        return kind.model_validate_json(body)
    except Exception as exc:  # pydantic's error, said in one line
        raise errors.ValidationError(f"{verb}: {exc}", field="body") from None


def default_node_id() -> str:
    """``host:pid``: unique among the nodes on one machine and across machines."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Runtime(Protocol):
    """What the node needs of the scheduler runtime it belongs to."""

    state: SchedulerState

    def catch_up_to(self, position: int) -> None:
        """Fold the log up to at least ``position``."""

    def request_leadership(self, epoch: int) -> None:
        """Lead under ``epoch`` (the writer thread records the election)."""

    def request_step_down(self, why: str) -> None:
        """Stop leading (the writer thread does it between batches)."""

    def wake(self) -> None:
        """Wake the writer thread."""


@dataclass
class _Waiting:
    verb: str
    future: Future[Any]
    deadline: float


@dataclass
class NodeStatus:
    """What ``/healthz`` and ``/metrics`` say of this node."""

    id: str | None
    role: str
    epoch: int | None
    leader: str | None
    lag: int
    forwarded: int
    withdrawn: int
    fenced: int
    elections: int


class ClusterNode:
    """This node's lease, its forwarded commands, and the commands it takes as leader."""

    def __init__(
        self,
        log: EventLog,
        *,
        node_id: str | None = None,
        lease_s: float = 3.0,
        forward_timeout_s: float = 10.0,
    ) -> None:
        self.node_id = node_id or default_node_id()
        self.lease_s = lease_s
        self.forward_timeout_s = forward_timeout_s
        self._log = log
        self._connect_args = postgres_connect_args(log.env)
        self.store = ClusterStore(
            self._connect_args, log.env["POSTGRES_SCHEMA"], lock_timeout_s=lease_s / 3
        )
        self.runtime: Runtime | None = None
        self.epoch: int | None = None
        self.leader_id: str | None = None
        self.lag = 0
        self.forwarded = 0
        self.withdrawn = 0
        self.fenced = 0
        self.elections = 0
        # The epoch of the lease this node holds in the store: set when it takes the lease,
        # before the writer thread has recorded the election (and renewed from then on,
        # however long that takes), cleared when the lease is lost or given up.
        self._lease_epoch: int | None = None
        self._waiting: dict[int, _Waiting] = {}
        self._waiting_lock = threading.Lock()
        self._outbox: queue.SimpleQueue[tuple[cmd.Command, Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._in_hand: set[int] = set()
        self._inbox_ready = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- wiring -------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """Whether this node holds the lease (as far as it knows: the store decides)."""
        return self.epoch is not None

    def status(self) -> NodeStatus:
        """This node's role, epoch, leader and counters."""
        return NodeStatus(
            id=self.node_id,
            role=LEADER if self.is_leader else FOLLOWER,
            epoch=self.epoch,
            leader=self.node_id if self.is_leader else self.leader_id,
            lag=self.lag,
            forwarded=self.forwarded,
            withdrawn=self.withdrawn,
            fenced=self.fenced,
            elections=self.elections,
        )

    def nodes(self) -> list[NodeView]:
        """Every node seen on this log, the most recently seen first."""
        return self.store.nodes()

    def try_lead(self) -> int | None:
        """Take the lease if it is free; the new epoch, or None (the runtime's start)."""
        assert self.runtime is not None
        epoch = self.store.acquire(self.node_id, self.lease_s, self.runtime.state.scheduler.epoch)
        if epoch is not None:
            self._lease_epoch = epoch
        return epoch

    def led(self, epoch: int, *, took_over: bool) -> None:
        """This node leads under ``epoch`` (called under the runtime's lock); a take-over
        from another leader is said in the server's output, a start as leader is not."""
        self.epoch, self.leader_id = epoch, self.node_id
        self.elections += 1
        level = logging.WARNING if took_over else logging.INFO
        log.log(level, "node %s leads (epoch %d)", self.node_id, epoch)

    def deposed(self, why: str) -> None:
        """This node no longer leads (called under the runtime's lock)."""
        if self.epoch is not None:
            log.warning("node %s stops leading (epoch %d): %s", self.node_id, self.epoch, why)
        held, self._lease_epoch, self.epoch = self._lease_epoch, None, None
        if held is not None:
            self._release(held)  # if it is still ours, the next node need not wait
        self._in_hand.clear()

    def start(self) -> None:
        """Start the lease keeper, the sender and the listener (once)."""
        if self._threads:
            return
        self._stop.clear()
        for target, name in (
            (self._keep_lease, "tierlog-lease"),
            (self._send, "tierlog-forward"),
            (self._listen, "tierlog-inbox"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, *, release: bool = True) -> None:
        """Stop the threads; give the lease up (a follower takes over at once) unless
        ``release`` is False; every caller still waiting for an answer hears
        ``NotLeaderError``."""
        self._stop.set()
        self._outbox.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        held, self._lease_epoch = self._lease_epoch, None
        if held is not None and release:
            self._release(held)
        with self._waiting_lock:
            waiting, self._waiting = self._waiting, {}
        for item in waiting.values():
            if not item.future.done():
                item.future.set_result(errors.NotLeaderError("the node stopped; retry"))

    def _release(self, epoch: int) -> None:
        try:
            self.store.release(self.node_id, epoch)
        except psycopg.Error:
            log.warning("could not release the lease; it expires by itself")

    def close(self) -> None:
        """Stop, then close the connections."""
        self.stop()
        self.store.close()

    # --- the follower's side: forwarding ------------------------------------------------

    def forward(self, command: cmd.Command) -> Future[Any]:
        """Send a command to the leader; the future's result is the command's result (or
        error), set once this node's state has caught up to the leader's answer."""
        future: Future[Any] = Future()
        self._outbox.put((command, future))
        return future

    def _send(self) -> None:
        while not self._stop.is_set():
            batch = self._take_outbox()
            if batch is None:
                return
            if not batch:
                continue
            try:
                ids = self.store.enqueue(
                    self.node_id, [encode_command(command) for command, _ in batch]
                )
            except psycopg.Error as exc:
                failed = errors.StoreUnavailableError(
                    f"could not forward the command to the leader: {exc}",
                    reason="the command could not be forwarded to the leader",
                )
                for _, future in batch:
                    future.set_result(failed)
                continue
            self.forwarded += len(ids)
            deadline = time.monotonic() + self.forward_timeout_s
            with self._waiting_lock:
                for inbox_id, (command, future) in zip(ids, batch, strict=True):
                    self._waiting[inbox_id] = _Waiting(command.verb, future, deadline)

    def _take_outbox(self) -> list[tuple[cmd.Command, Future[Any]]] | None:
        """What callers queued (waiting for the first), those still wanted; None: stop."""
        batch: list[tuple[cmd.Command, Future[Any]]] = []
        item = self._outbox.get()
        while item is not None:
            if item[1].set_running_or_notify_cancel():
                batch.append(item)
            if len(batch) >= MAX_FORWARD_BATCH:
                return batch
            try:
                item = self._outbox.get_nowait()
            except queue.Empty:
                return batch
        if batch:
            self._outbox.put(None)  # the stop, for the next round, once these are sent
            return batch
        return None

    def _answer_waiting(self) -> None:
        with self._waiting_lock:
            ids = list(self._waiting)
        if not ids:
            return
        answered = self.store.results(ids)
        if answered:
            runtime = self.runtime
            position = max(p for _, p in answered.values())
            if runtime is not None:
                runtime.catch_up_to(position)  # read-your-writes on this node
        now = time.monotonic()
        for inbox_id in ids:
            with self._waiting_lock:
                item = self._waiting.get(inbox_id)
            if item is None:
                continue
            if inbox_id in answered:
                self._finish(inbox_id, decode_answer(item.verb, answered[inbox_id][0]))
            elif now >= item.deadline and self.store.withdraw(inbox_id):
                self.withdrawn += 1
                self._finish(
                    inbox_id,
                    errors.NotLeaderError(
                        f"no leader answered within {self.forward_timeout_s:g} s; "
                        "nothing was appended: retry"
                    ),
                )

    def _finish(self, inbox_id: int, result: Any) -> None:
        with self._waiting_lock:
            item = self._waiting.pop(inbox_id, None)
        if item is not None and not item.future.done():
            item.future.set_result(result)

    # --- the leader's side: commands other nodes forwarded -------------------------------

    def take_forwarded(self, limit: int) -> list[tuple[cmd.Command, Future[Any], int]]:
        """Forwarded commands not yet in hand (the leader's writer thread), each with a
        future that puts its id back out of hand when it is done. A body that is not a
        command is answered with its error at once."""
        if limit <= 0 or not self.is_leader or not self._inbox_ready.is_set():
            return []
        self._inbox_ready.clear()
        taken: list[tuple[cmd.Command, Future[Any], int]] = []
        refused: list[tuple[int, bytes]] = []
        for row in self.store.pending(limit, sorted(self._in_hand)):
            try:
                command = decode_command(row.verb, row.body)
            except errors.ValidationError as exc:
                refused.append((row.id, encode_answer(exc)))
                continue
            future: Future[Any] = Future()
            self._in_hand.add(row.id)
            future.add_done_callback(partial(self._out_of_hand, row.id))
            taken.append((command, future, row.id))
        if refused and self.runtime is not None:
            self._log.complete_inbox(refused, self.runtime.state.position)
        return taken

    def _out_of_hand(self, inbox_id: int, _: Future[Any]) -> None:
        self._in_hand.discard(inbox_id)

    def withdrawn_of(self, ids: Sequence[int]) -> set[int]:
        """Those of ``ids`` their senders withdrew."""
        return set(ids) - self.store.existing(ids)

    # --- threads ------------------------------------------------------------------------

    def _keep_lease(self) -> None:
        while not self._stop.is_set():
            try:
                self._lease_round()
            except psycopg.Error as exc:
                log.warning("lease round failed: %s", str(exc).splitlines()[0] if str(exc) else exc)
            interval = self.lease_s / 3 if self._lease_epoch is not None else self.lease_s / 6
            self._stop.wait(interval)

    def _lease_round(self) -> None:
        runtime = self.runtime
        assert runtime is not None
        held = self._lease_epoch
        if held is not None:
            if not self.store.renew(self.node_id, held, self.lease_s):
                self._lease_epoch = None
                runtime.request_step_down("the lease was lost")
        else:
            view = self.store.leader()
            self.leader_id = view.node if view is not None and view.live else None
            if self.leader_id is None:
                won = self.try_lead()
                if won is not None:
                    runtime.request_leadership(won)
        head = self._log.head()
        self.lag = max(0, head - runtime.state.position)
        status = self.status()
        self.store.heartbeat(
            self.node_id, status.role, status.epoch, status.leader, runtime.state.position, self.lag
        )
        if self.is_leader:
            self.store.prune(PRUNE_AFTER_S)

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(**self._connect_args, autocommit=True) as conn:
                    conn.execute(f'LISTEN "{INBOX_CHANNEL}"')
                    conn.execute(f'LISTEN "{DONE_CHANNEL}"')
                    self._listen_on(conn)
            except psycopg.Error as exc:
                log.warning("inbox listener reconnects: %s", exc)
                self._stop.wait(POLL_S)

    def _listen_on(self, conn: psycopg.Connection[Any]) -> None:
        while not self._stop.is_set():
            woken = self._wake_leader
            for note in conn.notifies(timeout=POLL_S, stop_after=1):
                if note.channel == INBOX_CHANNEL:
                    woken()
            if self.is_leader and self.runtime is not None:
                self._inbox_ready.set()  # polled too: a lost notification only delays
            self._answer_waiting()

    def _wake_leader(self) -> None:
        self._inbox_ready.set()
        if self.is_leader and self.runtime is not None:
            self.runtime.wake()
