"""The running scheduler's checkpoints: start from the newest that matches the log.

Every ``every_events`` events, or ``every_s`` seconds when anything was appended, the
writer dumps its folded state (``tierlog.domain.snapshot``; a few milliseconds, as the
state holds the work in flight only) with the chain hash that covers its position, and
a background thread writes it beside the log (``NAME.checkpoints.db``, or a table in the
log's PostgreSQL schema) and keeps only the newest ``keep``. So the writer never waits
on the disk for a checkpoint. The dump itself holds the writer, and grows with the
state (a deep backlog of queued tasks): after a dump that took ``d`` seconds the next
is not due for ``d / DUMP_SHARE`` seconds, so dumping never takes more than that share
of the writer's time, however fast events come (at 100,000 events/s a checkpoint every
10,000 events would otherwise dump the state ten times a second). Writing the dump
competes for the CPU too (tens of megabytes for a deep backlog): a write that took ``w``
seconds defers the next dump to ``w / DUMP_SHARE`` seconds after it started, if later.

At start, ``restore`` takes the newest checkpoint whose chain hash is the log's at its
position, that decodes, and that was folded under the same settings (task TTL and
retention), and the runtime folds only the tail after it. A checkpoint that fails any
of those is ignored, never trusted, and reported: a warning line and ``status()``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tierlog.adapters.history.checkpoints import CheckpointStore
from tierlog.adapters.store.event_log import EventLog
from tierlog.domain.snapshot import OlderFoldError, dump_state, load_state
from tierlog.domain.state import SchedulerState
from tierlog.domain.working_set import Retention

EVERY_EVENTS = 10_000
EVERY_S = 60.0
KEEP = 3
DUMP_SHARE = 0.05
"""The most of the writer's time checkpoint dumps take (see the module's text)."""
SPACED_DUMP_S = 0.005
"""Dumps shorter than this are not spaced: at the 10 a second that 100,000 events/s
bring, they take less than ``DUMP_SHARE`` of the writer's time anyway."""


def next_dump_not_before(dumped_at: float, took: float) -> float:
    """When the next dump may start, after one that started at ``dumped_at`` (monotonic
    seconds) and took ``took`` seconds."""
    return dumped_at + took / DUMP_SHARE if took >= SPACED_DUMP_S else dumped_at


CANDIDATES = 5  # checkpoints looked at, newest first, before folding from position 0
log = logging.getLogger("tierlog.checkpoints")


@dataclass(frozen=True)
class IgnoredCheckpoint:
    """A checkpoint that was not used, and why."""

    position: int
    why: str


@dataclass
class CheckpointStatus:
    """What the checkpoints did: where the start came from, what was ignored, written."""

    restored_from: int | None = None
    restore_s: float = 0.0
    ignored: list[IgnoredCheckpoint] = field(default_factory=list)
    written: int = 0
    last_position: int | None = None
    failed: int = 0
    last_dump_s: float = 0.0
    last_write_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The status as JSON-ready data (``/healthz``)."""
        return {
            "restored_from": self.restored_from,
            "restore_s": round(self.restore_s, 4),
            "ignored": [{"position": i.position, "why": i.why} for i in self.ignored],
            "written": self.written,
            "last_position": self.last_position,
            "failed": self.failed,
            "last_dump_s": round(self.last_dump_s, 4),
            "last_write_s": round(self.last_write_s, 4),
        }


class SchedulerCheckpoints:
    """Restore the scheduler's state at start, and checkpoint it as it runs."""

    def __init__(
        self,
        event_log: EventLog,
        *,
        every_events: int = EVERY_EVENTS,
        every_s: float = EVERY_S,
        keep: int = KEEP,
    ) -> None:
        self.log = event_log
        self.every_events = every_events
        self.every_s = every_s
        self.keep = keep
        self.status = CheckpointStatus()
        self._store = CheckpointStore(event_log, scheduler=True)
        self._last_position = 0
        self._last_time = time.monotonic()
        self._not_before = 0.0  # monotonic time before which no dump is due
        self._pending: queue.SimpleQueue[tuple[int, bytes, bytes] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    # --- at start ---------------------------------------------------------------------

    def restore(self, task_ttl_s: float, retention: Retention) -> SchedulerState | None:
        """The newest usable checkpoint's state (None: fold from position 0)."""
        started = time.perf_counter()
        try:
            rows = self._store.newest(self.log.head(), CANDIDATES)
        except Exception as exc:  # unreadable checkpoints: fold from 0, say why
            self._ignore(0, f"the checkpoints could not be read ({exc})")
            return None
        for position, chain, data in rows:
            state = self._usable(position, chain, data, task_ttl_s, retention)
            if state is not None:
                self.status.restored_from = position
                self.status.restore_s = time.perf_counter() - started
                self._last_position = position
                return state
        return None

    def _usable(
        self, position: int, chain: bytes, data: bytes, task_ttl_s: float, retention: Retention
    ) -> SchedulerState | None:
        if self.log.chain_hash_at(position) != chain:
            self._ignore(position, "its chain hash is not the log's at that position")
            return None
        try:
            state = load_state(data)
        except OlderFoldError as exc:  # written by an earlier tierlog: fold the log
            self._ignore(position, str(exc))
            return None
        except Exception as exc:  # any decode failure: corrupt, never trusted
            self._ignore(position, f"it does not decode ({type(exc).__name__}: {exc})")
            return None
        if state.position != position:
            self._ignore(position, f"it holds the state at position {state.position}")
        elif state.task_ttl_s != task_ttl_s or state.retention != retention:
            self._ignore(position, "it was folded under other settings (task TTL, retention)")
        else:
            return state
        return None

    def _ignore(self, position: int, why: str) -> None:
        log.warning("checkpoint at position %d ignored: %s", position, why)
        self.status.ignored.append(IgnoredCheckpoint(position, why))

    # --- while running ------------------------------------------------------------------

    def behind(self, position: int) -> bool:
        """Whether the newest checkpoint offered is older than ``position``."""
        return position > self._last_position

    @property
    def not_before(self) -> float:
        """The monotonic time before which no dump is due (after a dump, or a write of
        one, that took ``SPACED_DUMP_S`` or more)."""
        return self._not_before

    def due(self, position: int) -> bool:
        """Whether a checkpoint of the state at ``position`` is due."""
        behind = position - self._last_position
        if behind <= 0:
            return False
        now = time.monotonic()
        if now < self._not_before:
            return False
        return behind >= self.every_events or now - self._last_time >= self.every_s

    def offer(self, state: SchedulerState) -> None:
        """Dump ``state`` (in the caller's thread, which owns it) for the background
        thread to write; a position no chain row covers yet is skipped."""
        self._last_position = state.position
        self._last_time = time.monotonic()
        chain = self.log.chain_hash_at(state.position)
        if chain is None:
            return
        started = time.perf_counter()
        data = dump_state(state)
        took = time.perf_counter() - started
        self._not_before = next_dump_not_before(self._last_time, took)
        self.status.last_dump_s = took
        self._pending.put((state.position, chain, data))
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._write_pending, name="tierlog-checkpoints", daemon=True
            )
            self._thread.start()

    def _write_pending(self) -> None:
        while True:
            item = self._pending.get()
            if item is None:
                return
            while True:  # only the newest of those waiting is worth writing
                try:
                    newer = self._pending.get_nowait()
                except queue.Empty:
                    break
                if newer is None:
                    self._write(*item)
                    return
                item = newer
            self._write(*item)
            # Not held while waiting for the next: a dump is megabytes (measured: a
            # 2.3 MB dump stayed resident between two checkpoints of a 1,000-live fleet).
            item = newer = None

    def _write(self, position: int, chain: bytes, data: bytes) -> None:
        started = time.monotonic()
        try:
            if self._store.insert(position, chain, data):
                self._store.keep_newest(self.keep)
                self.status.written += 1
                self.status.last_position = position
            else:
                self.status.failed += 1
        except Exception:  # a checkpoint is an optimisation: the log is the record
            self.status.failed += 1
            log.exception("writing the checkpoint at position %d failed", position)
        # Writing a large dump competes with the writer for the CPU and the interpreter
        # as the dump does: the next dump waits for it the same way.
        wrote = time.monotonic() - started
        self.status.last_write_s = wrote
        self._not_before = max(self._not_before, next_dump_not_before(started, wrote))

    def close(self) -> None:
        """Write what is pending, stop the thread, close the connection."""
        if self._thread is not None:
            self._pending.put(None)
            self._thread.join()
            self._thread = None
        self._store.close()
