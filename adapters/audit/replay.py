"""The replay half of ``tierlog audit``, in one streaming pass over the stored rows.

Each batch of raw rows (``EventLog.iter_raw``) is checked against the hash chain,
decoded once (``EventCodec``), and handed to the invariant and determinism checkers,
whose handlers are looked up by event type. Memory is bounded by one batch plus what
the checkers keep (live tasks; see ``domain.replay.invariants`` and ``domain.replay.determinism``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any
from uuid import UUID

from tierlog.adapters.audit.chain import ChainVerifier, audit_stop
from tierlog.adapters.runtime.process_memory import cyclic_gc_paused
from tierlog.adapters.store.codec import why_undecodable
from tierlog.adapters.store.event_log import EventLog, RawRow
from tierlog.domain.events import DomainEvent
from tierlog.domain.replay.determinism import DeterminismChecker
from tierlog.domain.replay.invariants import InvariantChecker, Violation

PARTS = ("read", "chain", "decode", "invariants", "determinism", "consumers")

# Something that takes every decoded chunk of the pass: (position, event) pairs.
EventConsumer = Callable[[Sequence[tuple[int, DomainEvent]]], None]

# The most rows read and checked at a time, whatever ``batch`` asks: each part walks the
# chunk in turn, and a chunk's objects should still be in the CPU cache for the next
# part (measured on 1M events: 1,000 rows ~4 s, 5,000 rows ~5.5 s).
CHUNK = 1024


@dataclass
class ReplayResult:
    """What the pass read, every violation found (the chain's first, then the others,
    each in log order), how many chain findings were counted past ``MAX_FINDINGS``
    but not kept (``omitted``), and the seconds spent in each part (``PARTS``)."""

    events: int = 0
    head: int = 0
    violations: list[Violation] = field(default_factory=list)
    omitted: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    # The checkers ran on the events after this position (0: all of them).
    checked_after: int = 0
    # Both checkers after ``head``, for a seal (``resume.dump_checkers``).
    checkers: tuple[InvariantChecker, DeterminismChecker] | None = None

    @property
    def clean(self) -> bool:
        """True when nothing is wrong."""
        return not self.violations and not self.omitted


class _Decoder:
    """Topic -> decode function, filled as topics appear (a log holds a few dozen)."""

    def __init__(self, log: EventLog) -> None:
        self._codec = log.codec
        self.by_topic: dict[str, Callable[[bytes], DomainEvent]] = {}

    def learn(self, topic: str) -> Callable[[bytes], DomainEvent]:
        decode = self._codec.decoder(topic)
        if len(self.by_topic) < 4096:  # a forged log could hold any number of topics
            self.by_topic[topic] = decode
        return decode

    def batch(
        self, rows: Sequence[RawRow], sink: list[Violation]
    ) -> tuple[Sequence[RawRow], list[DomainEvent]]:
        """The rows that decode, and their events; the others are reported."""
        by_topic, learn = self.by_topic, self.learn
        try:
            return rows, [(by_topic.get(t) or learn(t))(s) for _, _, _, t, s in rows]
        except Exception:
            pass  # one of them does not decode: sort them out one by one
        kept: list[RawRow] = []
        events: list[DomainEvent] = []
        for row in rows:
            try:
                # Not just msgspec's errors: an upcaster can meet a shape it does not
                # expect and fail any way it likes.
                events.append((by_topic.get(row[3]) or learn(row[3]))(row[4]))
            except Exception as exc:
                detail = why_undecodable(row[3], exc)
                sink.append(Violation(row[0], _dashed(row[1]), "event_decodes", detail))
            else:
                kept.append(row)
        return kept, events


def _dashed(raw_id: str) -> str:
    try:
        return str(UUID(raw_id))
    except (ValueError, TypeError, AttributeError):  # not an id this store writes
        return str(raw_id)


def replay_check(
    log: EventLog,
    *,
    progress: Callable[[int, int], None] | None = None,
    batch: int = 1000,
    stop: int | None = None,
    consumers: Sequence[EventConsumer] = (),
    resume: tuple[int, InvariantChecker, DeterminismChecker] | None = None,
    consumers_after: int = 0,
) -> ReplayResult:
    """Verify the hash chain, the invariants and the routing decisions of the log up to
    ``stop`` (default: ``audit_stop``, the head when the pass starts), reading and
    decoding each record once.

    ``progress(done, head)`` is called every ``batch`` rows and at the end; the rows are
    read and checked in chunks of at most ``CHUNK``. Every check runs to the end and
    reports every finding (the chain keeps at most ``MAX_FINDINGS``, see
    ``ChainVerifier``). A record whose payload does not decode is reported as
    ``event_decodes`` and skipped by the checkers. The garbage collector is off during
    the pass (for the whole process).
    ``consumers`` get every decoded chunk as ``(position, event)`` pairs, in log order
    (the audit folds read models on them, so the log is decoded once).

    ``resume`` (a sealed position and both checkers as they were after it, from
    ``resume.load_checkers``) goes on from there: the chain is still verified over the
    whole log, but only the events after that position are checked, and only those
    after it or after ``consumers_after``, whichever is first, are decoded (the
    consumers get those).
    """
    head = audit_stop(log) if stop is None else stop
    replay = _Replay(log, head, consumers)
    if resume is not None:
        replay.resume(*resume, consumers_after=consumers_after)
    # Nothing this pass keeps can form a reference cycle, and the checkers' records are
    # untracked; collections would only walk the chunk in flight, thousands of times.
    with cyclic_gc_paused():
        replay.run(batch, progress)
    return replay.result()


class _Replay:
    """One pass: the chain verifier, the decoder and both checkers, fed chunk by chunk."""

    def __init__(self, log: EventLog, head: int, consumers: Sequence[EventConsumer]) -> None:
        self.log, self.head = log, head
        self.consumers = consumers
        self.events = 0
        self.sink: list[Violation] = []  # decoding, invariants, determinism: chunk by chunk
        self.chain = ChainVerifier(log, head)
        self.decoder = _Decoder(log)
        self.invariants = InvariantChecker(self.sink)
        self.determinism = DeterminismChecker(self.sink)
        self.spent = dict.fromkeys(PARTS, 0.0)
        self.checked_after = 0  # the checkers take the events after it
        self.decode_after = 0  # the events after it are decoded

    def resume(
        self,
        position: int,
        invariants: InvariantChecker,
        determinism: DeterminismChecker,
        *,
        consumers_after: int,
    ) -> None:
        """Start from checkers as they were after ``position`` (see ``replay_check``)."""
        invariants.violations = determinism.violations = self.sink
        self.invariants, self.determinism = invariants, determinism
        self.checked_after = position
        self.decode_after = min(position, consumers_after) if self.consumers else position

    def run(self, batch: int, progress: Callable[[int, int], None] | None) -> None:
        """Read and verify every chunk; decode and check those past the seal."""
        clock, head, sink = time.perf_counter, self.head, self.sink
        chain_feed, decode = self.chain.feed, self.decoder.batch
        inv_handler = self.invariants.handlers.get
        inv_feed: Any = self.invariants.feed  # for a type without a handler (none, today)
        det_handler = self.determinism.handlers.get
        consumers = self.consumers
        decode_after, checked_after = self.decode_after, self.checked_after
        spent = self.spent
        done = reported = 0
        started = clock()
        for rows in self.log.iter_raw(0, head, min(batch, CHUNK)):
            t1 = clock()
            chain_feed(rows)
            t2 = clock()
            spent["read"] += t1 - started
            spent["chain"] += t2 - t1
            done += len(rows)
            if rows[-1][0] > decode_after:
                if rows[0][0] <= decode_after:  # the chunk the seal falls in
                    rows = [row for row in rows if row[0] > decode_after]
                kept, events = decode(rows, sink)
                t3 = clock()
                spent["decode"] += t3 - t2
                pairs = list(zip(kept, events, strict=True))
                if kept and kept[0][0] <= checked_after:
                    checked = [(r, e) for r, e in pairs if r[0] > checked_after]
                else:
                    checked = pairs
                for (position, key, _, _, _), event in checked:
                    (inv_handler(type(event)) or inv_feed)(position, key, event)
                t4 = clock()
                for (position, key, _, _, _), event in checked:
                    handler = det_handler(type(event))
                    if handler is not None:
                        handler(position, key, event)
                t5 = clock()
                if consumers:
                    positioned = [(row[0], event) for row, event in pairs]
                    for consume in consumers:
                        consume(positioned)
                spent["invariants"] += t4 - t3
                spent["determinism"] += t5 - t4
                spent["consumers"] += clock() - t5
            if progress is not None and done - reported >= batch:
                progress(done, head)
                reported = done
            started = clock()
        spent["read"] += clock() - started
        if progress is not None and done != reported:
            progress(done, head)
        self.events = done

    def result(self) -> ReplayResult:
        """The verdict, once the last batch is in."""
        self.chain.finish()
        violations = [
            Violation(found.position, "log", found.rule, found.detail)
            for found in self.chain.violations
        ]
        # Each chunk ran the invariants over it before the determinism check: a stable
        # sort by position restores the order of one event at a time (invariants first).
        self.sink.sort(key=attrgetter("position"))
        violations.extend(self.sink)
        return ReplayResult(
            events=self.events,
            head=self.head,
            violations=violations,
            omitted=self.chain.omitted,
            timings={part: round(seconds, 3) for part, seconds in self.spent.items()},
            checked_after=self.checked_after,
            checkers=(self.invariants, self.determinism),
        )
