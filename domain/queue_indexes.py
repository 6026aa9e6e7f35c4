"""The queue, in order and by tier, and the indexes a pass reads instead of the whole
backlog: part of ``SchedulerState``, kept as its events apply (and undone with them).

Every queued task is in ``queue`` and in ``queued_by_tier`` under its effective tier,
by ``(priority rank, submission position, task id)``. Of those, ``untimed_by_tier`` holds
the ones with no pending fallback timer that are not escalated (the only ones a pass
with no candidate for their tier may start a timer for), ``timed_by_tier`` the ones with
a pending timer (a tier that can route again cancels theirs) and ``escalated_by_tier``
the escalated ones (the only ones recovery may send back). During an outage a pass
looks at these, not at a backlog that may hold 100,000 tasks. ``queued_capabilities``
counts the queued tasks by the capabilities they need: a pass stops once no idle agent
can do any task it has not looked at yet.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

from sortedcontainers import SortedList

from tierlog.domain.aggregates.scheduler import PendingTimer
from tierlog.domain.aggregates.task import TaskRecord
from tierlog.domain.undo import MISSING, Recorded


class QueueIndexes(Recorded):
    """The queue and its indexes by tier (``SchedulerState`` creates them)."""

    tasks: dict[UUID, TaskRecord]
    timers: dict[UUID, PendingTimer]
    queue: SortedList
    queued_by_tier: dict[str, SortedList]
    untimed_by_tier: dict[str, SortedList]
    timed_by_tier: dict[str, SortedList]
    escalated_by_tier: dict[str, SortedList]
    queued_capabilities: dict[tuple[str, ...], int]

    def queued_tasks(self, tier: str | None = None) -> Iterator[TaskRecord]:
        """Queued tasks (of one effective tier, if given) in queue order.

        A snapshot: safe to change the queue meanwhile.
        """
        tasks = self.tasks
        source = self.queue if tier is None else self.queued_by_tier.get(tier, ())
        for _, _, task_id in list(source):
            yield tasks[task_id]

    def untimed_tasks(self, tier: str) -> Iterator[TaskRecord]:
        """Queued tasks of effective tier ``tier`` with no pending timer and not
        escalated, in queue order. A snapshot, as ``queued_tasks``."""
        tasks = self.tasks
        for _, _, task_id in list(self.untimed_by_tier.get(tier, ())):
            yield tasks[task_id]

    def escalated_tasks(self, tier: str) -> Iterator[TaskRecord]:
        """Queued tasks escalated to ``tier``, in queue order. A snapshot."""
        tasks = self.tasks
        for _, _, task_id in list(self.escalated_by_tier.get(tier, ())):
            yield tasks[task_id]

    def _queue_add(self, task: TaskRecord) -> None:
        key = (*task.queue_key, task.task_id)
        self._sorted_add(self.queue, key)
        tier = task.effective_tier
        self._tier_add(self.queued_by_tier, tier, key)
        if task.escalated_to is not None:
            self._tier_add(self.escalated_by_tier, tier, key)
        self._timer_index_add(task, tier, key)
        self._count_needed(task.needed_capabilities, 1)

    def _queue_remove(self, task: TaskRecord) -> None:
        key = (*task.queue_key, task.task_id)
        if not self._sorted_remove(self.queue, key):
            return  # not queued (a running task cancelled, say): in no index either
        tier = task.effective_tier
        self._remove_from(tier, key, self.queued_by_tier)
        # Only from the indexes it is in (a miss costs SortedList an exception).
        if task.escalated_to is not None:
            self._remove_from(tier, key, self.escalated_by_tier)
        if task.task_id in self.timers:
            self._remove_from(tier, key, self.timed_by_tier)
        elif task.escalated_to is None:
            self._remove_from(tier, key, self.untimed_by_tier)
        self._count_needed(task.needed_capabilities, -1)

    def _count_needed(self, needed: tuple[str, ...], step: int) -> None:
        # ``_set`` and ``_discard`` in one (twice per task: on the hot path).
        counts = self.queued_capabilities
        old = counts.get(needed, 0)
        if self.undo is not None:
            self.undo.steps += (counts, needed, old or MISSING)
        if old + step:
            counts[needed] = old + step
        else:  # no key for a set no queued task needs: the pass reads every key
            del counts[needed]

    def _remove_from(self, tier: str, key: Any, *indexes: dict[str, SortedList]) -> None:
        for by_tier in indexes:
            entries = by_tier.get(tier)
            if entries is not None:
                self._sorted_remove(entries, key)

    def _timer_index_add(self, task: TaskRecord, tier: str, key: Any) -> None:
        if task.task_id in self.timers:
            self._tier_add(self.timed_by_tier, tier, key)
        elif task.escalated_to is None:
            self._tier_add(self.untimed_by_tier, tier, key)

    def _tier_add(self, by_tier: dict[str, SortedList], tier: str, key: Any) -> None:
        if tier not in by_tier:
            self._set(by_tier, tier, SortedList())
        self._sorted_add(by_tier[tier], key)

    def _timer_changed(self, task_id: UUID) -> None:
        """Move a queued task between ``untimed_by_tier`` and ``timed_by_tier`` once its
        timer started or ended."""
        task = self.tasks.get(task_id)
        if task is None:
            return
        key = (*task.queue_key, task_id)
        tier = task.effective_tier
        if key not in self.queued_by_tier.get(tier, ()):
            return
        self._remove_from(tier, key, self.untimed_by_tier, self.timed_by_tier)
        self._timer_index_add(task, tier, key)
