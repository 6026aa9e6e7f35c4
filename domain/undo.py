"""The undo log of a unit of work: how a batch that is not committed is taken back."""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any

from sortedcontainers import SortedList

MISSING: Any = object()
"""The old value of a key that was not there (undoing its write removes it)."""


class UndoLog:
    """Flat undo steps, newest last: ``(target, key, old value)`` triples in one list.

    Flat triples rather than closures: no allocation per step, so no GC pressure on
    the hot path. What a step means depends on its target: a dict gets ``key`` back
    (or loses it), a ``SortedList`` loses what was ``"added"`` or regains what was
    ``"removed"``, a plain list (the deadline heap) regains a popped entry, a deque
    (the settled records' line) loses what was ``"appended"`` or regains at its front
    what was ``"popped"``, and any other object gets its attribute ``key`` back.
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
            elif isinstance(target, deque):
                if key == "appended":
                    target.pop()
                else:
                    target.appendleft(old)
            else:
                setattr(target, key, old)


class Recorded:
    """State whose changes are recorded in the open unit of work's undo log (``undo``;
    None while no unit of work is open): every write goes through these methods."""

    undo: UndoLog | None = None

    def _set(self, mapping: dict[Any, Any], key: Any, value: Any) -> None:
        undo = self.undo
        if undo is not None:
            undo.steps += (mapping, key, mapping.get(key, MISSING))
        mapping[key] = value

    def _discard(self, mapping: dict[Any, Any], key: Any) -> None:
        # A restored idle agent goes to the back of the line: idle order is a
        # preference between equally fit agents, not a rule, so that is harmless.
        old = mapping.pop(key, MISSING)
        if old is not MISSING and self.undo is not None:
            self.undo.steps += (mapping, key, old)

    def _set_scalar(self, name: str, value: Any) -> None:
        if self.undo is not None:
            self.undo.steps += (self, name, getattr(self, name))
        setattr(self, name, value)

    def _sorted_add(self, target: SortedList, item: Any) -> None:
        target.add(item)
        if self.undo is not None:
            self.undo.steps += (target, "added", item)

    def _sorted_remove(self, target: SortedList, item: Any) -> bool:
        """Remove ``item`` if ``target`` holds it; whether it did."""
        try:
            target.remove(item)  # one search, where "in" then remove would be two
        except ValueError:
            return False
        if self.undo is not None:
            self.undo.steps += (target, "removed", item)
        return True
