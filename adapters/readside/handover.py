"""The events the writer just committed, handed to the projection runner in memory.

The writer (or its catch-up) offers each run of events it folded, with the position
its state stood at before them (``after``): the log holds nothing between ``after``
and the run's first event, so a runner that has folded exactly up to ``after`` may fold
the run as it is, without reading the store or decoding anything. The hand-over is
bounded and never makes the writer wait: when it holds ``capacity`` events, an offer is
refused (counted, then forgotten), and the runner finds a gap between the position it
folded and the next run it is handed, and reads the store, as it would in another
process, on another node or after a restart. Why that is safe:

- a run is folded only when its ``after`` is the runner's committed position, read
  again under the read store's lock in the same transaction that records the new one,
  so exactly-once holds as before: a batch and its positions commit together or not;
- the writer offers a run only once it is committed (``EventLog.append`` returned,
  and its positions are the ones its state expected) or read back from the log, so a
  run the runner folds is in the log, in log order, and decodes to the same values;
- whatever is lost (a refused offer, a crash) is only a cost: the store has it all.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tierlog.domain.events import DomainEvent

Events = Sequence[tuple[int, DomainEvent]]


@dataclass
class HandOverStats:
    """What went through a hand-over: events offered, refused (it was full), folded
    from it, and passed over (the runner had read them from the store already)."""

    offered: int = 0
    refused: int = 0
    taken: int = 0
    skipped: int = 0


class HandOver:
    """A bounded queue of committed runs of events, from the writer to the runner.

    ``offer`` (the writer's thread) never blocks beyond a short lock; ``take`` (the
    runner's thread) returns the events that follow a position directly, or None when
    it holds none that do (the runner then reads the store).
    """

    def __init__(self, capacity: int, *, on_offer: Callable[[], None] | None = None) -> None:
        self.capacity = capacity
        self.stats = HandOverStats()
        self._on_offer = on_offer
        self._lock = threading.Lock()
        # Runs in log order: (after, events), ``after`` the position just before them.
        self._runs: deque[tuple[int, Events]] = deque()
        self._held = 0

    def offer(self, after: int, events: Events) -> bool:
        """Hand over ``events`` (committed, in log order, the first directly after
        ``after``); False when the hand-over is full (the runner will read the store)."""
        if not events:
            return True
        with self._lock:
            self.stats.offered += len(events)
            taken = self._held + len(events) <= self.capacity
            if taken:
                self._runs.append((after, events))
                self._held += len(events)
            else:
                self.stats.refused += len(events)
        if self._on_offer is not None:
            self._on_offer()  # refused too: the runner then knows to read the store
        return taken

    def take(
        self, after: int, limit: int, stop: int | None = None
    ) -> list[tuple[int, DomainEvent]] | None:
        """Up to ``limit`` events that directly follow position ``after`` (none past
        ``stop``), taken out of the hand-over; None when it holds none that do. Runs
        that end at or before ``after`` (folded already, from the store) are dropped.

        A run covers the log from its ``after`` to its last event with nothing left
        out, so it may be folded from any position in that stretch; a run whose
        ``after`` lies past the position reached leaves a gap only the store can fill.
        """
        with self._lock:
            runs = self._runs
            while runs and runs[0][1][-1][0] <= after:
                self._drop_first()
            taken: list[tuple[int, DomainEvent]] = []
            end = after
            while runs and len(taken) < limit:
                run_after, events = runs[0]
                if run_after > end:
                    break  # a gap: the store has what lies between
                start = _first_past(events, end)
                count = min(limit - len(taken), len(events) - start)
                if stop is not None:
                    count = min(count, _first_past(events, stop) - start)
                if count <= 0:
                    break
                taken.extend(events[start : start + count])
                end = taken[-1][0]
                rest = events[start + count :]
                self._held -= len(events) - len(rest)
                if rest:  # kept for the next batch: it follows ``end`` directly
                    runs[0] = (end, rest)
                    break
                runs.popleft()
            self.stats.taken += len(taken)
            return taken or None

    def _drop_first(self) -> None:
        _, events = self._runs.popleft()
        self._held -= len(events)
        self.stats.skipped += len(events)

    def __len__(self) -> int:
        """Events held."""
        return self._held


def _first_past(events: Events, position: int) -> int:
    """The index of the first of ``events`` (in log order) past ``position``."""
    return bisect_right(events, position, key=_position)


def _position(event: tuple[int, DomainEvent]) -> int:
    return event[0]
