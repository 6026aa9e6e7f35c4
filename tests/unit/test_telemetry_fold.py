"""The telemetry read model on the virtual clock: timers by reason, the routing
measurements summed into histograms, the fallback-wait values, the ``tier->target``
labels, and where each task's timer events sit (what the HTTP timeline reads)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from itertools import count
from typing import Any
from uuid import UUID, uuid4

import pytest
from event_factories import sidecar_decision
from memory_rows import MemoryRows
from msgspec.structs import replace

from tierlog.domain import events as ev
from tierlog.domain.config import TierRule
from tierlog.projections.base import FIRST_VERSION, Fold, fold_version
from tierlog.projections.telemetry import (
    RM_TEL_COUNTERS,
    RM_TEL_TASK_TIMERS,
    RM_TEL_TASKS,
    TelemetryProjection,
    summarise,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# The ladder of a fleet without Claude whose two lower tiers each wait for another target:
# trivial work for Ollama, standard work for Claude (disabled), complex work on the sidecar.
LADDER = (
    TierRule(tier="trivial", target="ollama", cost_tier="local"),
    TierRule(tier="standard", target="claude", cost_tier="api"),
    TierRule(tier="complex", target="sidecar", cost_tier="free"),
)


def _fold(events: Sequence[ev.DomainEvent]) -> MemoryRows:
    rows = MemoryRows()
    Fold([(TelemetryProjection(), 0, None)]).apply(rows, list(enumerate(events, start=1)))
    return rows


def _summary(rows: MemoryRows) -> dict[str, Any]:
    counters = [(name, label, value) for name, label, value in rows.all_stored(RM_TEL_COUNTERS)]
    states: dict[tuple[int, int], int] = {}
    for row in rows.all_stored(RM_TEL_TASKS):
        key = (row[1], row[2])  # state, tier: codes, as the read side's query gives them
        states[key] = states.get(key, 0) + 1
    return summarise(counters, [(s, t, n) for (s, t), n in states.items()])


def _timer_rows(rows: MemoryRows, task_id: UUID) -> list[tuple[int, str]]:
    return sorted(
        (row["position"], row["outcome"])
        for row in rows.all(RM_TEL_TASK_TIMERS)
        if row["task_id"] == str(task_id)
    )


def _ticks(step_ns: int) -> Iterator[int]:
    for tick in count():
        yield tick * step_ns


# --- timers by reason -----------------------------------------------------------------


def test_timers_started_and_fired_are_counted_by_their_reason(make):
    h = make(claude_enabled=False, ladder=LADDER, fallback_wait_s=5.0)
    h.agent("a1")
    h.submit("trivial", description="fix typo in README")  # no Ollama endpoint
    h.submit("standard", description="implement the feature")  # Claude is disabled
    h.advance(5)  # both timers fire
    summary = _summary(_fold(h.log))
    timers = summary["timers"]
    both = {"no_healthy_ollama_endpoints": 1, "claude_disabled": 1}
    assert timers["started_by_reason"] == both
    assert timers["fired_by_reason"] == both
    assert timers["started"] == timers["fired"] == 2


def test_a_cancelled_timer_is_counted_by_its_cancellation_reason(h):
    h.agent("a1")
    task = h.submit("standard")  # no endpoint yet: a timer starts
    h.endpoint()  # the tier recovers inside the wait: the task is assigned
    timers = _summary(_fold(h.log))["timers"]
    assert timers["started_by_reason"] == {"no_healthy_ollama_endpoints": 1}
    assert timers["fired_by_reason"] == {}
    assert timers["cancelled"] == {"assigned": 1}
    assert h.task(task).state == "assigned"


# --- routing measurements -------------------------------------------------------------


def test_each_routing_decision_adds_its_candidates_and_scoring_time(h):
    h.svc.perf_ns = _ticks(1_500_000).__next__  # every scoring takes 1.5 ms
    h.endpoint("gpu-a")
    h.endpoint("gpu-b")
    h.endpoint("gpu-c")
    h.agent("a1"), h.agent("a2")
    h.submit("standard")  # routed to ollama over three candidates
    h.submit("complex")  # routed to claude: one candidate
    summary = _summary(_fold(h.log))
    candidates = summary["routing_candidates"]
    assert candidates["count"] == 2 and candidates["sum"] == 4
    assert candidates["buckets"]["le_3"] == 1 and candidates["buckets"]["le_1"] == 1
    assert sum(candidates["buckets"].values()) == 2
    scoring = summary["routing_scoring_us"]
    assert scoring["count"] == 2 and scoring["sum_us"] == 3000
    assert scoring["buckets"]["le_2500"] == 2 and sum(scoring["buckets"].values()) == 2


@pytest.mark.parametrize(
    ("candidates", "label"),
    [(0, "le_0"), (1, "le_1"), (4, "le_5"), (5, "le_5"), (101, "le_inf")],
)
@pytest.mark.parametrize(
    ("scoring_us", "scoring_label"),
    [(0, "le_10"), (10, "le_10"), (11, "le_50"), (100_000, "le_100000"), (100_001, "le_inf")],
)
def test_routing_histogram_buckets_take_a_value_up_to_their_bound(
    candidates, label, scoring_us, scoring_label
):
    task = uuid4()
    decision = replace(
        sidecar_decision(T0), candidate_count=candidates, scoring_duration_us=scoring_us
    )
    routed = ev.TaskRouted(
        originator_id=task, originator_version=3, timestamp=T0, generation=1, decision=decision
    )
    summary = _summary(_fold([routed]))
    assert {k: v for k, v in summary["routing_candidates"]["buckets"].items() if v} == {label: 1}
    assert summary["routing_candidates"]["sum"] == candidates
    scoring = summary["routing_scoring_us"]
    assert {k: v for k, v in scoring["buckets"].items() if v} == {scoring_label: 1}
    assert scoring["sum_us"] == scoring_us


def test_an_assignment_reuses_its_decision_and_is_not_measured_twice(h):
    h.endpoint()
    h.agent("a1")
    h.submit("standard")
    assert len(h.of(h.log, ev.TaskAssigned)) == 1
    summary = _summary(_fold(h.log))
    assert summary["routing_candidates"]["count"] == 1
    assert summary["routing_decisions"] == {"standard->ollama": 1}


# --- the tier->target label and the fallback wait (untested before) ------------------


def test_routing_decisions_are_labelled_tier_then_target(h):
    h.endpoint()
    h.agent("a1"), h.agent("a2"), h.agent("a3")
    h.submit("trivial", description="fix typo in README")
    h.submit("standard")
    h.submit("complex", description="refactor the storage layer")
    assert _summary(_fold(h.log))["routing_decisions"] == {
        "trivial->sidecar": 1,
        "standard->ollama": 1,
        "complex->claude": 1,
    }


def test_a_fallback_decision_is_labelled_by_the_tier_it_fell_back_to(h):
    h.agent("a1")
    h.submit("standard")
    h.advance(5)  # no Ollama endpoint came: falls back to complex, Claude
    assert _summary(_fold(h.log))["routing_decisions"] == {"complex->claude": 1}


def test_the_fallback_wait_histogram_holds_each_waits_value(make):
    h = make(fallback_wait_s=5.0)
    h.agent("a1")
    h.submit("standard")
    h.advance(5)
    h.agent("a2")
    h.submit("standard")
    h.advance(7)  # fires late (no pass ran in between): waited 7 s
    wait = _summary(_fold(h.log))["fallback_wait_ms"]
    assert [e.wait_ms for e in h.of(h.log, ev.FallbackTimerFired)] == [5000, 7000]
    assert wait["count"] == 2 and wait["sum_ms"] == 12_000
    assert {k: v for k, v in wait["buckets"].items() if v} == {"le_5000": 1, "le_10000": 1}


# --- the timeline's index of timer events ---------------------------------------------


def test_each_tasks_timer_events_are_indexed_by_position(h):
    h.agent("a1")
    waits = h.submit("standard")
    h.advance(5)  # fires
    h.agent("a2")
    recovers = h.submit("standard")
    h.endpoint()  # recovers: cancelled (assigned)
    rows = _fold(h.log)
    positions = {id(e): p for p, e in enumerate(h.log, start=1)}

    def expected(task_id: UUID) -> list[tuple[int, str]]:
        outcomes = {
            ev.FallbackTimerStarted: "started",
            ev.FallbackTimerFired: "fired",
            ev.FallbackTimerCancelled: "cancelled",
        }
        return [
            (positions[id(e)], outcomes[type(e)])
            for e in h.log
            if type(e) in outcomes and e.task_id == task_id  # type: ignore[attr-defined]
        ]

    assert _timer_rows(rows, waits) == expected(waits)
    assert [o for _, o in _timer_rows(rows, waits)] == ["started", "fired"]
    assert [o for _, o in _timer_rows(rows, recovers)] == ["started", "cancelled"]


def test_the_telemetry_fold_version_was_bumped_for_its_new_rows():
    # Read models folded by version 1 counted timers under label "" and had no
    # histograms of routing measurements: a bumped version refolds them at start.
    assert fold_version(TelemetryProjection()) > FIRST_VERSION
    assert RM_TEL_TASK_TIMERS in TelemetryProjection().tables
