"""The agents' waiting long-polls (``GET /v1/agents/{id}/assignment?wait=``) and what
wakes them: the runtime's commits, from the writer's thread, handed to the event loop
that owns the waiters."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from tierlog.adapters.http.notices import CancelNotices
from tierlog.adapters.settings import LONG_POLL_MAX_S
from tierlog.domain import events as ev


@dataclass
class LongPolls:
    """The agents' waiting long-polls, and what wakes them."""

    max_wait_s: float = LONG_POLL_MAX_S
    loop: asyncio.AbstractEventLoop | None = None
    waiters: dict[str, set[asyncio.Event]] = field(default_factory=lambda: defaultdict(set))
    closing: bool = False
    # The cancellations agents were told of on their polls (each once per node).
    cancelled: CancelNotices = field(default_factory=CancelNotices)

    @contextmanager
    def waiting(self, agent_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever something may have changed for ``agent_id``."""
        waiter = asyncio.Event()
        self.waiters[agent_id].add(waiter)
        try:
            yield waiter
        finally:
            self.waiters[agent_id].discard(waiter)
            if not self.waiters[agent_id]:
                self.waiters.pop(agent_id, None)

    def on_committed(self, applied: Sequence[tuple[int, ev.DomainEvent]]) -> None:
        """Runtime listener (writer thread): wake long-polls of agents that got work."""
        agents = {
            e.agent_id
            for _, e in applied
            if isinstance(e, ev.AgentReserved | ev.AgentDeregistered | ev.AgentRegistered)
        }
        if agents:
            # The waiters belong to the event loop: touch them only from there.
            self._on_loop(self._wake, agents)

    def shutting_down(self) -> None:
        """The server is stopping: every long-poll answers now (any thread)."""
        self.closing = True
        self._on_loop(self._wake, set(self.waiters))

    def _on_loop(self, wake: Callable[[set[str]], None], agents: set[str]) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():  # not serving yet, or no longer
            return
        try:
            loop.call_soon_threadsafe(wake, agents)
        except RuntimeError:  # closed between the check and the call, as serve stops
            return

    def _wake(self, agents: set[str]) -> None:
        for agent_id in agents:
            for waiter in self.waiters.get(agent_id, ()):
                waiter.set()
