"""The unit of work: events decided in one batch, applied to state as they are decided,
and the undo log that takes them back if the batch is not committed.

Applying at once lets later decisions in the batch see earlier ones (an agent taken
by one task is not offered to the next). The runtime appends the batch's events in
one transaction; if the append loses a race, leaving the ``with`` block without
``commit()`` rolls the state back, and the batch is decided again on fresh state::

    with UnitOfWork(state) as uow:
        results = service.decide(uow, commands, now)
        if log.append(uow.events):
            uow.commit()
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from sortedcontainers import SortedList

from tierlog.domain import events as ev
from tierlog.domain.errors import DomainError

if TYPE_CHECKING:
    from tierlog.domain.state import SchedulerState

T = TypeVar("T")
MISSING: Any = object()
"""The old value of a key that was not there (undoing its write removes it)."""


class UndoLog:
    """Flat undo steps, newest last: ``(target, key, old value)`` triples in one list.

    Flat triples rather than closures: no allocation per step, so no GC pressure on
    the hot path. What a step means depends on its target: a dict gets ``key`` back
    (or loses it), a ``SortedList`` loses what was ``"added"`` or regains what was
    ``"removed"``, a plain list (the deadline heap) regains a popped entry, and any
    other object gets its attribute ``key`` back.
    """

    __slots__ = ("steps",)

    def __init__(self) -> None:
        self.steps: list[Any] = []

    def mark(self) -> int:
        """A point to roll back to (a savepoint)."""
        return len(self.steps)

    def rollback(self, mark: int = 0) -> None:
        """Undo every step recorded after ``mark``, newest first."""
        steps = self.steps
        while len(steps) > mark:
            old = steps.pop()
            key = steps.pop()
            target = steps.pop()
            if isinstance(target, dict):
                if old is MISSING:
                    target.pop(key, None)
                else:
                    target[key] = old
            elif isinstance(target, SortedList):
                if key == "added":
                    target.discard(old)
                else:
                    target.add(old)
            elif isinstance(target, list):
                heapq.heappush(target, old)
            else:
                setattr(target, key, old)


class UnitOfWork:
    """One batch: its events in order, applied to ``state`` as they are emitted.

    Use it as a context manager. Leaving the block without ``commit()`` (an exception,
    a lost race) rolls the state back to where it was on entry.
    """

    def __init__(self, state: SchedulerState) -> None:
        self.state = state
        self.events: list[ev.DomainEvent] = []
        self.first_position = state.position + 1
        self._undo: UndoLog | None = None

    def __enter__(self) -> UnitOfWork:
        if self.state.undo is not None:
            raise RuntimeError("a unit of work is already open on this state")
        self._undo = UndoLog()
        self.state.undo = self._undo
        self.first_position = self.state.position + 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._undo is not None:
            self.rollback()

    def commit(self) -> None:
        """Keep every change: the events are in the log."""
        self._undo = None
        self.state.undo = None

    def rollback(self) -> None:
        """Undo every change of this unit of work and close it."""
        if self._undo is not None:
            self._undo.rollback()
        self.events.clear()
        self.commit()

    def attempt(self, decide: Callable[[], T]) -> T | DomainError:
        """Run one command's decision: its result, or the ``DomainError`` it raised, with
        everything it emitted taken back (the rest of the batch goes on)."""
        mark = self._undo.mark() if self._undo is not None else 0
        emitted = len(self.events)
        try:
            return decide()
        except DomainError as exc:
            if self._undo is not None:
                self._undo.rollback(mark)
            del self.events[emitted:]
            return exc

    def emit(self, *events: ev.DomainEvent) -> None:
        """Apply each event at the position it is expected to get, and keep it."""
        state = self.state
        for event in events:
            state.apply(event, state.position + 1)
            self.events.append(event)
