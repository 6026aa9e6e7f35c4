"""A compact, typed picture of ``SchedulerState`` for checkpoints (msgpack via msgspec):
decoding typed records is several times faster than unpickling them.

``FOLD_VERSION`` names how the state is folded. A checkpoint written under an earlier
fold lacks what the fold now keeps (since 2: the deadlines of queued tasks, the digest
of a keyed submission, the agent a running task was cancelled from; since 3: a retry's
``not_before`` and its last failed agent, when an agent became idle), so it is refused
(``OlderFoldError``) and the state is folded from the log instead.
"""

from __future__ import annotations

from collections import deque
from uuid import UUID

import msgspec
from sortedcontainers import SortedList

from tierlog.domain.aggregates.agent import AgentRecord, host_of
from tierlog.domain.aggregates.endpoint import EndpointRecord
from tierlog.domain.aggregates.scheduler import PendingTimer, SchedulerRecord
from tierlog.domain.aggregates.task import TaskRecord
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.state import SchedulerState
from tierlog.domain.working_set import Retention, Settled


class StateSnapshot(msgspec.Struct, kw_only=True, gc=False):
    """Everything a ``SchedulerState`` holds that cannot be derived."""

    task_ttl_s: float
    position: int
    tasks: list[TaskRecord]
    queue: list[tuple[int, int, UUID]]
    agents: list[AgentRecord]
    idle_agents: dict[str, int]
    endpoints: list[EndpointRecord]
    endpoint_state_position: int
    timers: list[PendingTimer]
    scheduler_version: int
    config: SchedulerConfig | None
    config_position: int
    # Written by earlier versions; ignored: an idempotency key derives its task's id.
    idempotency: dict[str, UUID] = {}
    agent_tokens: dict[str, str]
    deadlines: list[tuple[float, int, str, UUID, int]]
    deadline_counter: int
    keep_finished: bool = True
    finished_counts: list[tuple[str, str, int]] = []
    retention: Retention | None = None
    # (settled at, kind, key as text, version): a task's key is its id's text.
    settled: list[tuple[float, str, str, int]] = []
    leader: str | None = None
    epoch: int = 0
    # Checkpoints written before this field existed were folded under fold 1.
    fold_version: int = 1


FOLD_VERSION = 3
"""How ``SchedulerState`` is folded now; raise it when the fold keeps something new."""


class OlderFoldError(ValueError):
    """A checkpoint folded by an earlier tierlog: usable only by folding the log again."""

    def __init__(self, found: int) -> None:
        super().__init__(
            f"it was folded by an earlier tierlog (fold {found}, this one folds {FOLD_VERSION})"
        )
        self.found = found


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(StateSnapshot)


def dump_state(state: SchedulerState) -> bytes:
    """The state's bytes (stale deadlines dropped first where they may be many: the
    scan of every entry took 79 ms of a 173 ms dump of 100,000 queued tasks, all live,
    and the dump holds the writer)."""
    if state.deadlines_mostly_stale():
        state.compact_deadlines()
    return _encoder.encode(
        StateSnapshot(
            task_ttl_s=state.task_ttl_s,
            position=state.position,
            tasks=list(state.tasks.values()),
            queue=list(state.queue),
            agents=list(state.agents.values()),
            idle_agents=dict(state.idle_agents),
            endpoints=list(state.endpoints.values()),
            endpoint_state_position=state.endpoint_state_position,
            timers=list(state.timers.values()),
            scheduler_version=state.scheduler_version,
            config=state.config,
            config_position=state.config_position,
            agent_tokens=dict(state.agent_tokens),
            deadlines=list(state.deadlines),
            deadline_counter=state._deadline_counter,
            keep_finished=state.keep_finished,
            finished_counts=[(st, tier, n) for (st, tier), n in state.finished_counts.items()],
            retention=state.retention,
            settled=[(at, kind, str(key), version) for at, kind, key, version in state.settled],
            leader=state.scheduler.leader,
            epoch=state.scheduler.epoch,
            fold_version=FOLD_VERSION,
        )
    )


def load_state(data: bytes) -> SchedulerState:
    """A ``SchedulerState`` from ``dump_state`` bytes, with its indexes rebuilt.

    Raises ``OlderFoldError`` for a checkpoint folded under an earlier fold.
    """
    snap = _decoder.decode(data)
    if snap.fold_version != FOLD_VERSION:
        raise OlderFoldError(snap.fold_version)
    state = SchedulerState(
        snap.task_ttl_s, keep_finished=snap.keep_finished, retention=snap.retention
    )
    state.finished_counts = {(st, tier): n for st, tier, n in snap.finished_counts}
    state.position = snap.position
    state.tasks = {t.task_id: t for t in snap.tasks}
    state.queue = SortedList(snap.queue)
    state.timers = {t.task_id: t for t in snap.timers}
    for key in snap.queue:
        task = state.tasks[key[2]]
        tier = task.effective_tier
        state.queued_by_tier.setdefault(tier, SortedList()).add(key)
        if task.escalated_to is not None:
            state.escalated_by_tier.setdefault(tier, SortedList()).add(key)
        if task.task_id in state.timers:
            state.timed_by_tier.setdefault(tier, SortedList()).add(key)
        elif task.escalated_to is None:
            state.untimed_by_tier.setdefault(tier, SortedList()).add(key)
        needed = task.needed_capabilities
        state.queued_capabilities[needed] = state.queued_capabilities.get(needed, 0) + 1
    state.agents = {a.agent_id: a for a in snap.agents}
    state.idle_agents = dict(snap.idle_agents)
    state.idle_order = SortedList((since, agent) for agent, since in snap.idle_agents.items())
    for agent_id, since in snap.idle_agents.items():
        host = host_of(state.agents[agent_id].ollama_host)
        if host is not None:
            state.idle_by_host.setdefault(host, SortedList()).add((since, agent_id))
    state.endpoints = {e.endpoint_id: e for e in snap.endpoints}
    state.endpoint_state_position = snap.endpoint_state_position
    state.scheduler = SchedulerRecord(
        version=snap.scheduler_version,
        config=snap.config,
        config_position=snap.config_position,
        leader=snap.leader,
        epoch=snap.epoch,
    )
    state.agent_tokens = dict(snap.agent_tokens)
    state.deadlines = list(snap.deadlines)
    state._deadline_counter = snap.deadline_counter
    state.settled = deque(_settled(entry) for entry in snap.settled)
    return state


def _settled(entry: tuple[float, str, str, int]) -> Settled:
    at, kind, key, version = entry
    if kind == "task":
        return (at, "task", UUID(key), version)
    return (at, "agent" if kind == "agent" else "endpoint", key, version)
