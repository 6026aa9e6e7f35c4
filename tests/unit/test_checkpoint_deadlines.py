"""A checkpoint's deadline heap: a dump scans the heap for stale entries only when they
may far outnumber the live ones (the scan held the writer for about half of a dump of a
deep backlog, where every entry is live); either way the loaded state decides the same."""

from __future__ import annotations

from datetime import timedelta

from tierlog.domain.snapshot import dump_state, load_state
from tierlog.domain.state import STALE_DEADLINES_SLACK


def _assigned_task(h):
    h.agent("a1")
    task_id = h.submit("trivial", description="fix typo")
    assert h.task(task_id).state == "assigned"
    return task_id


def test_a_heap_of_mostly_live_entries_is_dumped_as_it_is(h):
    task_id = _assigned_task(h)
    for _ in range(3):  # each heartbeat leaves the previous lease's entry stale
        h.clock.advance(1.0)
        h.run("heartbeat", agent_id="a1", task_id=task_id, generation=1)
    before = list(h.state.deadlines)
    assert not h.state.deadlines_mostly_stale()

    loaded = load_state(dump_state(h.state))

    assert h.state.deadlines == before  # not scanned, not compacted
    assert loaded.deadlines == before
    assert loaded.next_deadline() == h.state.next_deadline()
    assert loaded.snapshot() == h.state.snapshot()


def test_a_heap_of_mostly_stale_entries_is_compacted_before_the_dump(h):
    task_id = _assigned_task(h)
    for _ in range(STALE_DEADLINES_SLACK + 10):
        h.clock.advance(0.01)
        h.run("heartbeat", agent_id="a1", task_id=task_id, generation=1)
    assert h.state.deadlines_mostly_stale()
    lease = h.task(task_id).lease_expires_at

    loaded = load_state(dump_state(h.state))

    assert len(loaded.deadlines) == len(h.state.deadlines) <= 2  # the live lease only
    assert loaded.next_deadline() == lease.timestamp()
    assert loaded.snapshot() == h.state.snapshot()
    # The loaded state reclaims the task when the live lease passes, not before.
    h.clock.set(lease - timedelta(microseconds=1))
    assert loaded.pop_due(h.now()) == []
    h.clock.set(lease)
    assert [entry[2] for entry in loaded.pop_due(h.now())] == ["lease"]
