"""Records that left the scheduler's memory, handed back from the store by key.

``SchedulerState`` under a ``Retention`` policy lets settled records go (see
``tierlog.domain.working_set``). When a command names one (a late completion, a retry
of a dead letter, an idempotency key seen before, an agent registering again) or an
event of the log needs one, this reads that record's own stream from the log (an
index lookup) and folds it into ``state.recalled`` for the decision or fold at hand.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from tierlog.adapters.store.stream_reads import StreamReads
from tierlog.domain import commands as cmd
from tierlog.domain.events import DomainEvent
from tierlog.domain.state import SchedulerState
from tierlog.domain.working_set import Ref, aggregate_id, record_from_stream, refs_of


class StoreRecall:
    """Looks records up in ``log`` and counts the lookups (for ``/metrics``)."""

    def __init__(self, log: StreamReads) -> None:
        self.log = log
        self.lookups = 0
        """Records looked up in the store so far."""
        self.found = 0
        """Of those, how many the store held (the rest are new keys)."""

    def for_commands(self, state: SchedulerState, commands: Iterable[cmd.Command]) -> None:
        """Hand back every record the commands name that is not in memory (one query)."""
        if state.retention is None:
            return
        refs = {ref for command in commands for ref in refs_of(command) if not state.holds(ref)}
        if refs:
            self._recall(state, refs, before=state.position + 1)

    def for_event(self, state: SchedulerState, event: DomainEvent, position: int) -> None:
        """Hand back the record folding ``event`` (at ``position``) needs, if it left."""
        ref = state.missing_for(event)
        if ref is not None:
            self._recall(state, (ref,), before=position)

    def _recall(self, state: SchedulerState, refs: Collection[Ref], before: int) -> None:
        ids = {ref: aggregate_id(ref) for ref in refs}
        streams = self.log.streams_of(list(ids.values()), before=before)
        self.lookups += len(refs)
        for ref, stream_id in ids.items():
            record = record_from_stream(ref[0], streams.get(stream_id, ()))
            if record is not None:
                state.recalled[ref] = record
                self.found += 1
