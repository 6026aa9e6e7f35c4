"""The unit of work: events decided in one batch, applied to state as they are decided,
and the undo log that takes them back if the batch is not committed.

Applying at once lets later decisions in the batch see earlier ones (an agent taken
by one task is not offered to the next). The runtime appends the batch's events in
one transaction; if the append loses a race, leaving the ``with`` block without
``commit()`` rolls the state back, and the batch is decided again on fresh state::

    with UnitOfWork(state) as uow:
        results = service.handle_all(uow, commands, now)
        service.schedule(uow, now)
        if log.append(uow.events):
            uow.commit()
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from tierlog.domain import events as ev
from tierlog.domain.errors import InternalError, TierlogError
from tierlog.domain.undo import UndoLog

if TYPE_CHECKING:
    from tierlog.domain.state import SchedulerState

T = TypeVar("T")


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
            self.state.position = self.first_position - 1
        self.events.clear()
        self.commit()

    def attempt(self, decide: Callable[[], T], what: str = "command") -> T | TierlogError:
        """Run one command's decision (``what`` names it): its result, or the error it
        failed with, with everything it emitted taken back (the rest of the batch goes
        on). A ``DomainError`` (a refusal) or another ``TierlogError`` is returned as it
        is; any other exception is a fault inside tierlog, returned as an
        ``InternalError`` whose ``__cause__`` is the exception (for the traceback)."""
        mark = self._undo.mark() if self._undo is not None else 0
        emitted = len(self.events)
        try:
            return decide()
        except TierlogError as exc:
            self._take_back(mark, emitted)
            return exc
        except Exception as exc:
            # One command's fault must not fail its neighbours in the group commit.
            self._take_back(mark, emitted)
            fault = InternalError(
                f"{what} failed inside tierlog ({type(exc).__name__}); "
                "the server's log has the traceback"
            )
            fault.__cause__ = exc
            return fault

    def _take_back(self, mark: int, emitted: int) -> None:
        if self._undo is not None:
            self._undo.rollback(mark)
        del self.events[emitted:]
        # The state's position is not in the undo log (``SchedulerState.apply``): the
        # events kept end where the position goes back to.
        self.state.position = self.first_position - 1 + emitted

    def emit(self, *events: ev.DomainEvent) -> None:
        """Apply each event at the position it is expected to get, and keep it."""
        state = self.state
        for event in events:
            state.apply(event, state.position + 1)
            self.events.append(event)
