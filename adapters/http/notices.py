"""Which cancellations an agent has been told of on its poll (issue #13).

A running task that is cancelled frees its agent; the agent's record keeps the task and
generation until it takes other work (``AgentRecord.cancelled``, folded from the log).
Its heartbeat, completion or failure for that generation is always refused with
``cancelled``; its poll says so once, then waits for work as usual, so an idle agent
does not spin on the same answer. Polls append nothing, so "once" is remembered here,
by the node that answered: a restart or another node may tell it once more, which an
agent that already stopped the work can ignore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

TOLD_MAX = 10_000
"""Cancellations remembered as told, per node (the oldest are forgotten first)."""

Notice = tuple[UUID, int]
"""A cancelled task and the generation the agent held it at."""


@dataclass
class CancelNotices:
    """The notices told so far, in the order told."""

    most: int = TOLD_MAX
    told: dict[tuple[str, Notice], None] = field(default_factory=dict)

    def first_telling(self, agent_id: str, notice: Notice) -> bool:
        """Whether ``agent_id`` is to be told of ``notice`` now (the first time asked)."""
        key = (agent_id, notice)
        if key in self.told:
            return False
        self.told[key] = None
        if len(self.told) > self.most:
            del self.told[next(iter(self.told))]
        return True
