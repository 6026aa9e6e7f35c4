"""Agent liveness (issue #13): an idle agent not heard from for ``agent_idle_timeout_s``
is marked offline, and gets no work until it polls again.

Polls are reads and append nothing, so when an agent was last heard from is not in
the log. The writer keeps it in memory (:class:`Presence`, fed by polls and
heartbeats on this process); the log gives a lower bound of its own, the time the
agent last became idle (``AgentRecord.idle_since``: registered, freed by its task's
end, or back from offline). Whether an agent is silent is a pure function of the
state, that map and ``now`` (:func:`silent_agents`). The decision is recorded as
``AgentWentOffline(reason="idle_timeout", last_seen_at=…)``: that event is the fact,
and a replay folds it rather than deciding it again, so the in-memory map never has
to be rebuilt for the log to be deterministic.

A start (or a take-over of the lead) counts as hearing from every agent
(``Presence.restart``): the map died with the previous process, and silence that
nobody could observe must not take the whole fleet offline at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from tierlog.domain.aggregates import agent as agents
from tierlog.domain.aggregates.agent import AgentRecord
from tierlog.domain.state import SchedulerState
from tierlog.domain.unit_of_work import UnitOfWork


class Presence:
    """When this process last heard from each agent (in memory, not in the log).

    Written from HTTP threads (a dict assignment), read by the writer's passes.
    """

    def __init__(self) -> None:
        """Nothing heard yet, and no start to count from (the log's times alone)."""
        self.heard_at: dict[str, datetime] = {}
        self.since: datetime | None = None
        # Agents with a long-poll open here, and how many: present all the while.
        self.polling: dict[str, int] = {}

    def poll_started(self, agent_id: str, now: datetime) -> None:
        """A poll of the agent began at ``now`` (it is present until it ends)."""
        self.heard_at[agent_id] = now
        self.polling[agent_id] = self.polling.get(agent_id, 0) + 1

    def poll_ended(self, agent_id: str, now: datetime) -> None:
        """A poll of the agent ended at ``now``."""
        self.heard_at[agent_id] = now
        left = self.polling.get(agent_id, 1) - 1
        if left > 0:
            self.polling[agent_id] = left
        else:
            self.polling.pop(agent_id, None)

    def heard(self, agent_id: str, now: datetime) -> None:
        """The agent polled or heartbeated at ``now``."""
        self.heard_at[agent_id] = now

    def restart(self, now: datetime) -> None:
        """This process starts deciding at ``now``: every agent counts as heard then."""
        self.since = now
        self.heard_at.clear()

    def forget(self, agent_id: str) -> None:
        """The agent left the fleet."""
        self.heard_at.pop(agent_id, None)


def last_seen(agent: AgentRecord, presence: Presence) -> datetime | None:
    """The latest of: its last poll or heartbeat here, the time it became idle, the
    start of this process (None: none of these is known)."""
    times = [t for t in (presence.heard_at.get(agent.agent_id), agent.idle_since) if t]
    if presence.since is not None:
        times.append(presence.since)
    return max(times, default=None)


def silent_agents(
    state: SchedulerState, presence: Presence, timeout_s: float, now: datetime
) -> tuple[list[tuple[AgentRecord, datetime]], datetime]:
    """The idle agents silent for ``timeout_s`` at ``now`` (with when each was last
    seen), and the earliest time another may fall silent: a lower bound, since a poll
    only moves an agent's time later and an agent that becomes idle after ``now`` has
    all of ``timeout_s`` ahead of it."""
    timeout = timedelta(seconds=timeout_s)
    silent: list[tuple[AgentRecord, datetime]] = []
    next_due = now + timeout
    for agent_id in state.idle_agents:
        agent = state.agents[agent_id]
        if agent_id in presence.polling:
            continue  # waiting in a long-poll right now
        seen = last_seen(agent, presence)
        if seen is None:
            continue  # a record from before idle times were kept, in a state with no start
        if seen + timeout <= now:
            silent.append((agent, seen))
        else:
            next_due = min(next_due, seen + timeout)
    return silent, next_due


def mark_silent_offline(
    uow: UnitOfWork, presence: Presence, timeout_s: float, now: datetime
) -> None:
    """Mark every silent idle agent offline, when the last sweep said one may be due.

    The sweep walks the idle agents, so it runs only once its own lower bound has
    passed (``SchedulerState.liveness_due``, an undone-on-rollback scalar: a batch
    decided again sweeps again).
    """
    state = uow.state
    if state.liveness_due is not None and now < state.liveness_due:
        return
    silent, next_due = silent_agents(state, presence, timeout_s, now)
    for agent, seen in silent:
        uow.emit(agents.go_silent(agent, seen, now))
    state.set_liveness_due(next_due)
