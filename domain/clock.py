"""Time, injected: the domain never reads a clock of its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Anything that tells the time as a timezone-aware UTC datetime."""

    def now(self) -> datetime:
        """The current time."""
        ...


class VirtualClock:
    """A clock that moves only when told to: tests, the demo and replays drive it."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("a virtual clock needs a timezone-aware start")

    def now(self) -> datetime:
        """The current virtual time."""
        return self._now

    def advance(self, seconds: float) -> datetime:
        """Move forward by ``seconds`` (never backwards) and return the new time."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._now += timedelta(seconds=seconds)
        return self._now

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (not earlier than now)."""
        if when < self._now:
            raise ValueError("a clock does not go backwards")
        self._now = when
