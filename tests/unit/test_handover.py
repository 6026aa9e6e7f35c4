"""The hand-over from the writer to the projection runner: bounded, and only ever the
events that directly follow the position asked for."""

from __future__ import annotations

import threading
from uuid import uuid4

from tierlog.adapters.readside.handover import HandOver
from tierlog.domain import events as ev
from tierlog.domain.clock import VirtualClock


def _run(first: int, last: int) -> list[tuple[int, ev.DomainEvent]]:
    now = VirtualClock().now()
    return [
        (
            p,
            ev.AgentDeregistered(
                originator_id=uuid4(), originator_version=1, timestamp=now, agent_id="a"
            ),
        )
        for p in range(first, last + 1)
    ]


def _positions(taken: list[tuple[int, ev.DomainEvent]] | None) -> list[int] | None:
    return None if taken is None else [p for p, _ in taken]


def test_runs_that_follow_on_are_taken_together_up_to_the_limit():
    handover = HandOver(100)
    handover.offer(0, _run(1, 3))
    handover.offer(3, _run(4, 8))
    assert _positions(handover.take(0, 5)) == [1, 2, 3, 4, 5]
    assert len(handover) == 3  # the rest of the second run waits for the next batch
    assert _positions(handover.take(5, 100)) == [6, 7, 8]
    assert handover.take(8, 100) is None
    assert handover.stats.taken == 8 and len(handover) == 0


def test_a_gap_before_the_first_run_leaves_it_to_the_store():
    handover = HandOver(100)
    handover.offer(5, _run(6, 9))  # the runner stands at 2: 3..5 are only in the store
    assert handover.take(2, 100) is None
    assert len(handover) == 4  # kept: once the store has brought the runner to 5
    assert _positions(handover.take(5, 100)) == [6, 7, 8, 9]


def test_a_gap_between_runs_ends_the_batch_there():
    handover = HandOver(100)
    handover.offer(0, _run(1, 2))
    handover.offer(4, _run(5, 6))  # 3..4 were refused (or appended elsewhere)
    assert _positions(handover.take(0, 100)) == [1, 2]
    assert handover.take(2, 100) is None


def test_what_the_runner_folded_from_the_store_is_dropped_or_cut():
    handover = HandOver(100)
    handover.offer(0, _run(1, 3))
    handover.offer(3, _run(4, 8))
    # The runner read 1..5 from the store: the first run goes, the second is cut.
    assert _positions(handover.take(5, 100)) == [6, 7, 8]
    assert handover.stats.skipped == 3 and len(handover) == 0


def test_nothing_past_stop_is_taken():
    handover = HandOver(100)
    handover.offer(0, _run(1, 6))
    assert _positions(handover.take(0, 100, stop=4)) == [1, 2, 3, 4]
    assert handover.take(4, 100, stop=4) is None
    assert _positions(handover.take(4, 100)) == [5, 6]


def test_a_full_handover_refuses_without_waiting_and_the_runner_sees_a_gap():
    woken = threading.Event()
    handover = HandOver(5, on_offer=woken.set)
    assert handover.offer(0, _run(1, 4))
    assert woken.is_set()
    assert not handover.offer(4, _run(5, 6))  # 4 + 2 > 5: refused, nothing kept
    assert handover.offer(6, _run(7, 7))
    assert handover.stats.offered == 7 and handover.stats.refused == 2
    assert _positions(handover.take(0, 100)) == [1, 2, 3, 4]
    assert handover.take(4, 100) is None  # 5..6 are in the store only
    assert _positions(handover.take(6, 100)) == [7]


def test_an_empty_offer_is_taken_as_nothing():
    handover = HandOver(1)
    assert handover.offer(0, [])
    assert len(handover) == 0 and handover.take(0, 10) is None
