"""Runs the projections: follows the log, applies events, records positions.

Each batch is one read-model transaction that also stores every projection's new
position, so after a crash each event has been applied exactly once: either the
whole batch was committed with its positions, or none of it was. Within a batch the
projections fold into a ``RowCache``; the rows they changed are written once, at the
end of the batch.

In ``serve`` the writer hands the runner the events it just committed
(``readside/handover.py``): a batch that directly follows the position the read models
reached is folded from memory, with no read of the store and no decoding; the store is
read whenever the hand-over does not have that (behind, another process or node, a
restart). Either way the batch's positions commit with its rows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tierlog.adapters.readside.handover import Events, HandOver
from tierlog.adapters.readside.lineage import kept_as, mismatch_of
from tierlog.adapters.readside.read_store import IDENTITY_KEY, ReadStore
from tierlog.adapters.readside.row_cache import KeptRows, ReadModelWriter, RowCache, trim
from tierlog.adapters.settings import PROJECTION_BATCH, PROJECTION_KEEP_ROWS, PROJECTION_POLL_S
from tierlog.adapters.store import pg_locks
from tierlog.adapters.store.event_log import EventLog
from tierlog.adapters.store.lineage import ReplacedLogError, fingerprint
from tierlog.adapters.store.notify import follow_appends
from tierlog.domain.errors import StoreUnavailableError
from tierlog.domain.events import DomainEvent
from tierlog.projections.base import FIRST_VERSION, Fold, Projection, Table, fold_version
from tierlog.projections.registry import all_projections

log = logging.getLogger("tierlog.projections")


class ProjectionRunner:
    """Keeps the read models up to date with the log.

    Constructing one touches nothing: ``start()`` creates the read-model tables that
    are missing and refuses read models built from another log;
    ``run_until_caught_up()`` brings them up to date; ``start_background()`` follows
    the log in a thread until ``stop()``.
    """

    def __init__(
        self,
        event_log: EventLog,
        store: ReadStore,
        projections: Sequence[Projection] | None = None,
        *,
        batch: int = PROJECTION_BATCH,
        poll_interval: float = PROJECTION_POLL_S,
        indexes: bool = True,
    ) -> None:
        self.log = event_log
        self.store = store
        self.projections = list(projections or all_projections())
        self.batch = batch
        self.poll_interval = poll_interval
        # A scratch copy (the audit's) is only compared row by row: it needs no indexes.
        self.indexes = indexes
        self._started = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self.on_position: Callable[[int], None] | None = None
        """Called (on the thread that folded) each time ``committed_position`` moves."""
        self._committed_position = 0
        self.handover: HandOver | None = None
        """What the writer hands over (``accept_handover``); None: the store only."""
        self.folded_from_handover = 0
        """Events folded as the writer handed them over."""
        self.folded_from_store = 0
        """Events folded as read from the store."""
        self._handed = False  # whether the last batch was the hand-over's
        self._store_news = False  # another process appended (PostgreSQL's NOTIFY)
        self._refused_seen = 0  # the hand-over's refused offers, as last looked at
        # Rows as this runner last committed them, for the next batch (most of a batch's
        # rows were touched by the one before): valid while the positions are the ones
        # it committed with them (``_kept_at``), i.e. no other writer came in between.
        self._kept: KeptRows = {}
        self._kept_at: dict[str, int] | None = None
        self.keep_rows = PROJECTION_KEEP_ROWS

    @property
    def committed_position(self) -> int:
        """The position every read model has reached, as this runner last committed it
        or (another node's runner folding in turn with it) last found it committed."""
        return self._committed_position

    @committed_position.setter
    def committed_position(self, position: int) -> None:
        moved = position != self._committed_position
        self._committed_position = position
        if moved and self.on_position is not None:
            self.on_position(position)

    def status(self) -> dict[str, Any]:
        """Where the read models are folded and how far (``/healthz``)."""
        return {"in": "thread", "position": self.committed_position}

    def accept_handover(self, capacity: int) -> HandOver:
        """Fold what the writer hands over (``SchedulerRuntime.hand_off_to(h.offer)``)
        whenever it follows the read models' position: a hand-over of at most
        ``capacity`` events that wakes this runner on each offer."""
        self.handover = HandOver(capacity, on_offer=self.wake)
        return self.handover

    @contextmanager
    def in_step(self, batch: int) -> Iterator[Callable[[int, Events], bool]]:
        """While in this block, the returned hand-off (``fold_in_step``) folds what it
        is given in the caller's thread, in batches of at least ``batch`` events (a start
        folds a long stretch of the log: fewer, fuller transactions write each row
        fewer times). ``System.start`` hands it to the runtime as it folds the log, so
        that both fold the same decoded events."""
        if self.handover is None:
            raise RuntimeError("no hand-over: call accept_handover() first")
        handover, kept = self.handover, (self.batch, self.handover.capacity)
        self.batch = max(self.batch, batch)
        handover.capacity = max(handover.capacity, self.batch)
        try:
            yield self.fold_in_step
        finally:
            self.batch, handover.capacity = kept

    def fold_in_step(self, after: int, events: Events) -> bool:
        """Take ``events`` (the log's, right after position ``after``) and fold them
        now, in the caller's thread, once a full batch is held. Read models behind
        ``after`` (the runtime started from a checkpoint) first fold up to it from the
        store. True: the events were taken."""
        handover = self.handover
        if handover is None:
            return False
        if not handover and self.committed_position < after:
            self.run_until_caught_up(after)
        taken = handover.offer(after, events)
        if not taken or len(handover) >= self.batch:
            while self.run_once(handed_only=True):
                pass
            taken = taken or handover.offer(after, events)
        return taken

    def start(self) -> None:
        """Make the read store ready; once (later calls return).

        Creates the tables and position rows that are missing. Read models built from
        another log (ahead of this one, or disagreeing with its chain where they
        stopped) raise ``ReplacedLogError`` and are left as they are: they may be the
        only record of that history (``serve --accept-replaced-log`` keeps them aside
        first). Does not catch up (``run_until_caught_up``) and starts no thread.
        """
        if self._started:
            return
        self.store.create([s for p in self.projections for t in p.tables for s in self._ddl(t)])
        names = [p.name for p in self.projections] + [IDENTITY_KEY]
        stored = dict(self.store.query("SELECT name, position FROM rm_positions"))
        if any(name not in stored for name in names):
            # A row of its own for each projection (a batch updates them in place);
            # written only when one is missing, under the projections lock.
            with self.store.transaction() as db:
                db.executemany(
                    "INSERT INTO rm_positions (name, position) VALUES (?, 0)"
                    " ON CONFLICT (name) DO NOTHING",
                    [(name,) for name in names if name not in stored],
                )
        stored = dict(self.store.query("SELECT name, position FROM rm_positions"))
        names = [p.name for p in self.projections]
        found = mismatch_of(stored, self.log, names, kept_as(self.log.url, "<time>"))
        if found is not None:
            raise ReplacedLogError(found.message())
        self._renew_changed_folds()
        self._started = True
        self.committed_position = self.position()

    def _renew_changed_folds(self) -> None:
        """Start afresh every read model whose rows an older version of its fold wrote
        (``projections.base.fold_version``): its tables are dropped and created again and
        its position goes back to 0, so the next batches fold the whole log into it
        with the fold of today. Then record each fold's version.

        Runs after the lineage check (the read models of a replaced log are kept as they
        are) and takes locks only when a version is missing or differs, so a restart
        against a busy schema whose folds are all current locks nothing.
        """
        stored = dict(self.store.query("SELECT name, version FROM rm_folds"))
        if all(stored.get(p.name) == fold_version(p) for p in self.projections):
            return
        renewed: list[str] = []
        self._forget_rows()
        with self.store.transaction(locks=(pg_locks.DDL, pg_locks.PROJECTIONS)) as db:
            kept: list[int] = []  # the positions of the read models left as they are
            for projection in self.projections:
                # Read again under the locks: another node may have renewed it meanwhile.
                at = db.fetchone(
                    "SELECT position FROM rm_positions WHERE name = ?", (projection.name,)
                )
                row = db.fetchone("SELECT version FROM rm_folds WHERE name = ?", (projection.name,))
                if (int(row[0]) if row else FIRST_VERSION) == fold_version(projection):
                    kept.append(int(at[0]) if at else 0)
                else:
                    renewed.append(projection.name)
                    self._drop_and_create(db, projection)
            db.executemany(
                "INSERT INTO rm_folds (name, version) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET version = excluded.version",
                [(p.name, fold_version(p)) for p in self.projections],
            )
            # The lineage check takes the fingerprint at the slowest read model past 0:
            # a renewed one may have been that one, so record it again where that is now.
            past_zero = [p for p in kept if p > 0]
            if renewed and past_zero:
                db.execute(
                    "UPDATE rm_positions SET position = ? WHERE name = ?",
                    (self._fingerprint(min(past_zero)), IDENTITY_KEY),
                )
        if renewed:
            log.info(
                "read models to fold again from position 0 (their fold changed): %s",
                ", ".join(renewed),
            )

    def _drop_and_create(self, db: ReadModelWriter, projection: Projection) -> None:
        """Empty ``projection``'s tables (dropped and created again, not a delete of
        every row) and put its position back to 0."""
        for table in projection.tables:
            db.execute(f"DROP TABLE IF EXISTS {table.name}")
            for statement in self._ddl(table):
                db.execute(statement)
        db.execute("UPDATE rm_positions SET position = 0 WHERE name = ?", (projection.name,))

    def _require_started(self) -> None:
        if not self._started:
            raise RuntimeError("the projection runner is not ready: call start() first")

    def _ddl(self, table: Table) -> tuple[str, ...]:
        return table.ddl if self.indexes else table.ddl[:1]

    def _fingerprint(self, position: int) -> int:
        """63 bits of the chain hash covering ``position`` (-1 when none covers it)."""
        return fingerprint(self.log.chain_hash_at(position) if position else None)

    def positions(self) -> dict[str, int]:
        """Each projection's processed position."""
        positions = self.store.positions()
        return {p.name: positions.get(p.name, 0) for p in self.projections}

    def position(self) -> int:
        """The position every projection has reached (the slowest one's)."""
        return min(self.positions().values(), default=0)

    def lag(self) -> dict[str, int]:
        """Events each projection is behind the head of the log."""
        head = self.log.head()
        return {name: head - pos for name, pos in self.positions().items()}

    def run_once(self, stop: int | None = None, *, handed_only: bool = False) -> int:
        """Apply the next batch of events (up to position ``stop`` if given) to every
        projection; returns events applied. ``handed_only``: while the hand-over is
        empty the store is not read (0), since what the store shows beyond it is the
        writer's next commit, about to be handed over."""
        self._require_started()
        positions = self.positions()
        start = min(positions.values(), default=0)
        # Another node's runner may have folded what this one was about to: reads that
        # wait for a position (``min_position``) must see it without a batch of ours.
        self.committed_position = start
        events = self._next_events(start, stop, handed_only)
        if not events:
            return 0
        last = events[-1][0]
        fingerprint = self._fingerprint(last)
        try:
            self._fold_batch(events, start, fingerprint)
        except BaseException:
            self._forget_rows()  # they may hold changes the store rolled back
            raise
        self.committed_position = min(self.positions().values(), default=0)
        return len(events)

    def _forget_rows(self) -> None:
        self._kept = {}
        self._kept_at = None

    def _fold_batch(
        self, events: list[tuple[int, DomainEvent]], start: int, fingerprint: int
    ) -> None:
        """One read-store transaction: the positions, read again under its lock, then
        ``events`` folded past them and the new positions, with the rows."""
        last = events[-1][0]
        with self.store.transaction() as db:
            # Under the projections lock (PostgreSQL) or the write lock (SQLite) no other
            # runner (another node, tierlog project) writes until this one commits; the
            # positions are read again here, since one may have moved them meanwhile.
            windows: list[tuple[Projection, int, int | None]] = []
            for projection in self.projections:
                row = db.fetchone(
                    "SELECT position FROM rm_positions WHERE name = ?"
                    + ("" if self.store.sqlite_path is not None else " FOR UPDATE"),
                    (projection.name,),
                )
                windows.append((projection, int(row[0]) if row else 0, None))
            at = {projection.name: done for projection, done, _ in windows}
            if at != self._kept_at:  # another writer came in between: rows may differ
                self._forget_rows()
            # Folded only if they still follow on: a read model put back to 0 meanwhile
            # (another process renewed it) is folded from there by the next batch.
            follows = min(done for _, done, _ in windows) >= start
            if follows and any(done < last for _, done, _ in windows):  # else folded already
                self._fold(db, windows, events, fingerprint)
                at = {name: max(done, last) for name, done in at.items()}
        # Committed: the rows kept are the store's, at these positions.
        self._kept_at = at
        trim(self._kept, self.keep_rows)

    def _next_events(
        self, start: int, stop: int | None, handed_only: bool = False
    ) -> list[tuple[int, DomainEvent]]:
        """The next batch after ``start``: handed over if the hand-over has the events
        that follow it directly, else read from the store. A batch from the hand-over
        is only used if ``start`` is still where every read model stands once the
        transaction holds the lock (``run_once`` checks that before folding it)."""
        handed = None if self.handover is None else self.handover.take(start, self.batch, stop)
        self._handed = handed is not None
        if handed is not None:
            self.folded_from_handover += len(handed)
            return handed
        if self.handover is not None:
            refused, self._refused_seen = self._refused_seen, self.handover.stats.refused
            # Only the store has what an offer refused (the hand-over was full); a gap
            # (it holds runs that do not follow) says the same.
            if handed_only and not self.handover and refused == self._refused_seen:
                return []
        events = self.log.read(start, self.batch, stop)
        self.folded_from_store += len(events)
        return events

    def _fold(
        self,
        db: ReadModelWriter,
        windows: list[tuple[Projection, int, int | None]],
        events: list[tuple[int, DomainEvent]],
        fingerprint: int,
    ) -> None:
        """Fold ``events`` into each projection past its window's start, and record the
        new positions and the log's fingerprint where the slowest one now stands."""
        last = events[-1][0]
        rows = RowCache((t for p in self.projections for t in p.tables), db, self._kept)
        for projection, done, _ in windows:
            if last > done:
                db.execute(
                    "UPDATE rm_positions SET position = ? WHERE name = ?", (last, projection.name)
                )
        Fold(windows).apply(rows, events)
        rows.flush()
        # The start check compares the fingerprint at the slowest read model's position:
        # ``last``, unless another runner took every read model past it.
        reached = min(max(done, last) for _, done, _ in windows)
        if reached != last:
            fingerprint = self._fingerprint(reached)
        db.execute(
            "UPDATE rm_positions SET position = ? WHERE name = ?", (fingerprint, IDENTITY_KEY)
        )

    def run_until_caught_up(self, stop: int | None = None) -> int:
        """Apply batches up to position ``stop``, by default the log's head when called;
        returns events applied.

        The head is taken once: beside a busy node (whose appends keep coming, and whose
        runner takes turns with this one) "until no event is left" might never end."""
        stop = self.log.head() if stop is None else stop
        total = 0
        while applied := self.run_once(stop):
            total += applied
        return total

    def rebuild(self, stop: int | None = None) -> int:
        """Drop every read model and fold the log again from position 0 (up to ``stop``)."""
        self._require_started()
        self._forget_rows()
        with self.store.transaction(locks=(pg_locks.DDL, pg_locks.PROJECTIONS)) as db:
            for projection in self.projections:
                self._drop_and_create(db, projection)
        return self.run_until_caught_up(stop)

    def start_background(self) -> None:
        """``start()``, then follow the log in a thread: woken at once by ``wake()``,
        polling every ``poll_interval`` s for other writers (LISTEN/NOTIFY on PostgreSQL)."""
        self.start()
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(self.poll_interval,), name="tierlog-projections", daemon=True
        )
        self._thread.start()
        if self.log.is_postgres:
            self._listener = threading.Thread(
                target=follow_appends,
                args=(self.log, self._stop, self._appended_elsewhere),
                name="tierlog-projections-listen",
                daemon=True,
            )
            self._listener.start()

    def _appended_elsewhere(self) -> None:
        # Another process appended (LISTEN/NOTIFY on PostgreSQL).
        self._store_news = True  # not handed over: only the store has it
        self._wake.set()

    def wake(self) -> None:
        """Look at the log now (the runtime calls this after each commit)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop following the log."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._listener is not None:
            self._listener.join()
            self._listener = None

    def _run(self, poll_interval: float) -> None:
        failing = False  # a storage fault is said once per outage, not once a second
        handed_only = False
        while not self._stop.is_set():
            try:
                # Cleared before the batch, not after the wait: a wake-up left over from
                # an offer this batch already took would otherwise send the next one to
                # the store, which may show the writer's next commit before its hand-over.
                self._wake.clear()
                if self._store_news:
                    self._store_news, handed_only = False, False
                if self.run_once(handed_only=handed_only):
                    failing = False
                    # While the writer hands its commits over, the store would mostly
                    # show its next commit before the hand-over does: wait for that
                    # (a wake-up) instead; only the poll reads the store again.
                    handed_only = self._handed
                    continue
                failing = False
                # Woken at once by an in-process commit; polls for other writers.
                woken = not self._stop.is_set() and self._wake.wait(poll_interval)
                handed_only = handed_only and woken
            except StoreUnavailableError as exc:
                if not failing:
                    log.warning("projection batch failed, retrying every second: %s", exc)
                failing = True
                self._stop.wait(1.0)
            except Exception:  # a store hiccup: try again after a pause
                log.exception("projection batch failed")
                self._stop.wait(1.0)

    def close(self) -> None:
        """Stop and release the read store."""
        self.stop()
        self.store.close()
