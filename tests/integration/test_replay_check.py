"""The replay half of the audit in one pass over raw rows: iter_raw on both stores, and
replay_check finding what the checkers found before the rewrite (reference_checkers)."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from event_factories import plain_submission, sidecar_decision
from msgspec.structs import replace
from reference_checkers import ReferenceDeterminismChecker, ReferenceInvariantChecker

from tierlog.adapters.audit.chain import RawRecordHasher, verify_chain
from tierlog.adapters.audit.replay import PARTS, replay_check
from tierlog.adapters.store.event_log import EventLog, raw_id_bytes
from tierlog.adapters.store.hash_chain import record_hash
from tierlog.adapters.tools.demo import run_demo
from tierlog.domain import events as ev
from tierlog.domain.replay.invariants import InvariantChecker, Violation

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NEW_RULES = {"finished_stays_finished"}


@pytest.fixture(scope="module")
def demo_events(tmp_path_factory: pytest.TempPathFactory) -> list[ev.DomainEvent]:
    """A demo log's events (endpoints, timers that fire, reclaims, dead letters)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'demo.db'}"
    run_demo(url, tasks=240, seed=7)
    log = EventLog(url)
    events = [e for _, e in log.iter_events()]
    log.close()
    return events


def _log_of(url: str, events: list[ev.DomainEvent]) -> EventLog:
    log = EventLog(url)
    for start in range(0, len(events), 400):
        log.append(events[start : start + 400])
    return log


def _reference(events: Iterable[tuple[int, ev.DomainEvent]]) -> list[Violation]:
    invariants, determinism = ReferenceInvariantChecker(), ReferenceDeterminismChecker()
    found: list[Violation] = []
    for position, event in events:
        found.extend(invariants.check(position, event))
        found.extend(determinism.check(position, event))
    return found


def _where(v: Violation) -> tuple[int, str, str]:
    return v.position, v.aggregate_id, v.rule


# --- iter_raw --------------------------------------------------------------------------


def test_iter_raw_gives_the_stored_rows_in_order_in_bounded_batches(store_url, demo_events):
    log = _log_of(store_url, demo_events[:300])
    batches = list(log.iter_raw(batch=64))
    assert all(0 < len(rows) <= 64 for rows in batches)
    rows = [row for rows in batches for row in rows]
    read = log.read(0, limit=10_000)
    assert [row[0] for row in rows] == [position for position, _ in read] == list(range(1, 301))
    for (position, raw_id, version, topic, state), (at, event) in zip(rows, read, strict=True):
        assert position == at
        assert raw_id == event.originator_id.hex
        assert raw_id_bytes(raw_id) == event.originator_id.bytes
        assert version == event.originator_version
        assert isinstance(state, bytes)
        assert log.codec.decode(topic, state) == event
    log.close()


def test_iter_raw_keeps_to_after_and_stop(store_url, demo_events):
    log = _log_of(store_url, demo_events[:120])
    positions = [row[0] for rows in log.iter_raw(after=17, stop=101, batch=10) for row in rows]
    assert positions == list(range(18, 102))
    assert list(log.iter_raw(after=120)) == []
    assert [len(rows) for rows in log.iter_raw(after=100, batch=1000)] == [20]
    log.close()


def test_iter_raw_reads_an_in_memory_sqlite_log(demo_events, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log = _log_of("sqlite:///:memory:", demo_events[:50])
    assert [row[0] for rows in log.iter_raw(batch=20) for row in rows] == list(range(1, 51))
    assert replay_check(log).clean
    log.close()


def test_raw_rows_hash_as_the_chain_hashed_them():
    oid = uuid4()
    rows = [
        (6, oid.hex, 2, "TaskSubmitted", b'{"a":1}'),
        (7, oid.hex, 3, "domain.events:TaskSubmitted", b'{"a":1}'),  # as 0.1.0 stored it
        (8, str(oid), 4, "domain.events:T\u00e4sk", b""),  # a dashed id: the slow way
    ]
    hashes = RawRecordHasher().hashes(rows)
    assert hashes == [record_hash(p, oid.bytes, v, t, s) for p, _, v, t, s in rows]
    # The stored topic text is hashed, not the type it decodes to.
    assert hashes[1] != record_hash(7, oid.bytes, 3, "TaskSubmitted", b'{"a":1}')
    junk = [*rows, (9, None, 5, "x", None), (10, "zz", -1, "x", b"")]
    assert RawRecordHasher().hashes(junk)[3:] == [b"", b""]  # type: ignore[arg-type]


def test_a_forged_row_of_nulls_is_reported_not_a_crash(sqlite_url, demo_events):
    log = _log_of(sqlite_url, demo_events[:40])
    raw = sqlite3.connect(str(log.sqlite_path), isolation_level=None)
    raw.execute("INSERT INTO stored_events VALUES (NULL, 1, NULL, NULL)")
    raw.close()
    found = [(v.position, v.aggregate_id, v.rule) for v in replay_check(log).violations]
    assert found == [(41, "log", "record_inserted"), (41, "None", "event_decodes")]
    log.close()


# --- replay_check on whole logs --------------------------------------------------------


def test_a_clean_demo_log_replays_clean_with_progress_and_timings(store_url, demo_events):
    log = _log_of(store_url, demo_events)
    head = log.head()
    seen: list[tuple[int, int]] = []
    result = replay_check(log, batch=97, progress=lambda done, top: seen.append((done, top)))
    assert result.clean, result.violations[:3]
    assert result.events == head == result.head == len(demo_events)
    assert seen[-1] == (head, head) and len(seen) == -(-head // 97)
    assert set(result.timings) == set(PARTS)
    seen.clear()
    assert replay_check(log, batch=1500, progress=lambda d, t: seen.append((d, t))).clean
    assert seen == [(head, head)]  # every 1,500 rows, not every chunk of 1,024 read
    assert _reference(enumerate(demo_events, 1)) == []
    log.close()


def test_a_prefix_that_ends_inside_an_append_checks_clean(sqlite_url, demo_events):
    log = _log_of(sqlite_url, demo_events)  # appends of 400: 555 is inside the second
    result = replay_check(log, stop=555, batch=100)
    assert result.clean, result.violations[:3]
    assert result.events == result.head == 555
    log.close()


def _forged(events: list[ev.DomainEvent]) -> list[ev.DomainEvent]:
    """The demo's events with a few things the checkers must notice."""
    out = list(events)
    ollama = next(
        i
        for i, e in enumerate(out)
        if isinstance(e, ev.TaskRouted) and e.decision.target_type == "ollama"
    )
    out[ollama] = replace(
        out[ollama], decision=replace(out[ollama].decision, selected_model="forged")
    )
    stale = next(i for i, e in enumerate(out) if isinstance(e, ev.TaskRouted) and i > ollama + 50)
    out[stale] = replace(out[stale], decision=replace(out[stale].decision, config_position=3))
    assigned = [i for i, e in enumerate(out) if isinstance(e, ev.TaskAssigned)]
    third = out[assigned[3]]
    assert isinstance(third, ev.TaskAssigned)
    out[assigned[3]] = replace(third, generation=third.generation + 5)
    dropped = {
        next(i for i, e in enumerate(out) if isinstance(e, ev.TaskFailed)),
        next(i for i, e in enumerate(out) if isinstance(e, ev.FallbackTimerStarted)),
        next(i for i, e in enumerate(out) if isinstance(e, ev.TaskClassified) and i > 200),
    }
    return [e for i, e in enumerate(out) if i not in dropped]


def test_replay_check_finds_what_the_old_checkers_found(store_url, demo_events):
    events = _forged(demo_events)
    log = _log_of(store_url, events)
    result = replay_check(log, batch=50)
    expected = _reference(enumerate(events, 1))
    assert {v.rule for v in expected} >= {
        "decision_deterministic",
        "versions_contiguous",
        "routed_before_assigned",
        "timer_ends_once",
    }
    # Details may say more than they did (where an input was looked for): compare the rest.
    assert [_where(v) for v in result.violations if v.rule not in NEW_RULES] == [
        _where(v) for v in expected
    ]
    log.close()


def test_an_event_after_a_task_completed_is_still_reported(store_url, demo_events):
    done = next(e for e in demo_events if isinstance(e, ev.TaskCompleted))
    late = ev.TaskHeartbeated(
        originator_id=done.originator_id,
        originator_version=done.originator_version + 1,
        timestamp=done.timestamp,
        agent_id=done.agent_id,
        generation=done.generation,
        lease_expires_at=done.timestamp + timedelta(seconds=60),
    )
    log = _log_of(store_url, [*demo_events, late])
    result = replay_check(log)
    assert [(v.position, v.aggregate_id, v.rule) for v in result.violations] == [
        (len(demo_events) + 1, str(done.originator_id), "finished_stays_finished")
    ]
    log.close()


def test_replay_check_reports_the_first_chain_violation_and_undecodable_payloads(sqlite_url):
    log = EventLog(sqlite_url)
    run_demo(sqlite_url, tasks=10, seed=1)
    position = log.head() // 2
    raw = sqlite3.connect(str(log.sqlite_path), isolation_level=None)
    raw.execute("DROP TRIGGER stored_events_no_update")
    raw.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (b"{not json", position))
    raw.close()
    result = replay_check(log, batch=16)
    assert [(v.position, v.aggregate_id, v.rule) for v in result.violations[:2]] == [
        (position, "log", "record_changed"),
        (position, result.violations[1].aggregate_id, "event_decodes"),
    ]
    UUID(result.violations[1].aggregate_id)
    assert next(verify_chain(log)).position == position
    log.close()


# --- randomised logs: the new checkers against the reference, event by event -----------


def _random_log(
    rng: random.Random, length: int = 120, *, storable: bool = False
) -> list[ev.DomainEvent]:
    """Plausible but sloppy task traffic: versions and generations that sometimes skip
    or repeat (never repeat if ``storable``: the store refuses that), reclaims before
    leases end, timers that end twice; never an event for a finished task (where the
    new checker deliberately says more than the old one)."""
    tasks = [uuid4() for _ in range(4)]
    version = dict.fromkeys(tasks, 0)
    finished: set[UUID] = set()
    scheduler = 0
    out: list[ev.DomainEvent] = []
    at = T0
    for _ in range(length):
        at += timedelta(seconds=rng.choice((0, 1, 5, 30, 90)))
        live = [t for t in tasks if t not in finished]
        task = rng.choice(live or tasks)
        if rng.random() < 0.25:
            scheduler += 1 if rng.random() < 0.95 else 2
            common = {
                "originator_id": ev.SCHEDULER_ID,
                "originator_version": scheduler,
                "timestamp": at,
                "task_id": task,
            }
            kind = rng.choice(("start", "fire", "cancel"))
            if kind == "start":
                out.append(
                    ev.FallbackTimerStarted(
                        original_tier="standard",
                        fallback_tier="complex",
                        fires_at=at + timedelta(seconds=rng.choice((1, 5, 60))),
                        reason="no_healthy_ollama_endpoints",
                        **common,
                    )
                )
            elif kind == "fire":
                out.append(
                    ev.FallbackTimerFired(
                        original_tier="standard",
                        fallback_tier="complex",
                        reason="r",
                        wait_ms=5000,
                        **common,
                    )
                )
            else:
                out.append(ev.FallbackTimerCancelled(reason="assigned", **common))
            continue
        if not live:
            continue
        version[task] += 1 if rng.random() < 0.93 else rng.choice((2,) if storable else (0, 2))
        common = {"originator_id": task, "originator_version": version[task], "timestamp": at}
        generation = rng.choice((1, 1, 2, 3))
        lease = at + timedelta(seconds=rng.choice((-30, 0, 60)))
        kind = rng.choice(
            (
                "submitted",
                "routed",
                "assigned",
                "assigned",
                "heartbeated",
                "reclaimed",
                "requeued",
                "dead_lettered",
                "retried",
                "completed",
                "cancelled",
                "failed",
            )
        )
        if kind == "submitted":
            # Some with a deadline (issue #13's rules: timers and dead letters after it).
            deadline = at + timedelta(seconds=rng.choice((30, 120))) if rng.random() < 0.3 else None
            out.append(replace(plain_submission(task, version[task], at), complete_by=deadline))
        elif kind == "routed":
            out.append(
                ev.TaskRouted(generation=generation, decision=sidecar_decision(at), **common)
            )
        elif kind == "assigned":
            out.append(
                ev.TaskAssigned(
                    agent_id="a",
                    generation=generation,
                    decision=sidecar_decision(at),
                    lease_expires_at=lease,
                    **common,
                )
            )
        elif kind == "heartbeated":
            out.append(
                ev.TaskHeartbeated(
                    agent_id="a", generation=generation, lease_expires_at=lease, **common
                )
            )
        elif kind == "reclaimed":
            reason = rng.choice(("lease_expired", "agent_gone"))
            out.append(
                ev.TaskReclaimed(agent_id="a", reason=reason, previous_generation=1, **common)
            )
        elif kind == "requeued":
            out.append(ev.TaskRequeued(generation=generation, reason="r", **common))
        elif kind == "dead_lettered":
            reason = rng.choice(("ttl_expired", "deadline_passed"))
            out.append(ev.TaskDeadLettered(reason=reason, **common))
        elif kind == "retried":
            out.append(
                ev.TaskRetried(generation=generation, requested_by="op", complete_by=None, **common)
            )
        elif kind == "completed":
            out.append(ev.TaskCompleted(agent_id="a", generation=1, result=None, **common))
            finished.add(task)
        elif kind == "cancelled":
            # Sometimes naming a holder (right or wrong: cancel_names_holder).
            held = ("a", generation) if rng.random() < 0.5 else (None, None)
            out.append(
                ev.TaskCancelled(
                    reason="r", requested_by="op", agent_id=held[0], generation=held[1], **common
                )
            )
            finished.add(task)
        else:
            out.append(
                ev.TaskFailed(
                    agent_id="a", generation=generation, error="e", retry_count=1, **common
                )
            )
    return out


@pytest.mark.parametrize("seed", range(300))
def test_the_invariant_checker_agrees_with_the_reference_on_random_logs(seed):
    events = _random_log(random.Random(seed))
    old, new = ReferenceInvariantChecker(), InvariantChecker()
    for position, event in enumerate(events, 1):
        assert new.check(position, event) == old.check(position, event), (position, event)


@pytest.mark.parametrize("seed", range(3))
def test_replay_check_agrees_with_the_reference_on_random_logs(store_url, seed):
    # Routing decisions here cite a task that was never classified and so on: only the
    # invariants are compared.
    events = _random_log(random.Random(seed), length=400, storable=True)
    log = _log_of(store_url, events)
    result = replay_check(log, batch=33)
    found = [v for v in result.violations if v.rule != "decision_deterministic"]
    old = ReferenceInvariantChecker()
    assert found == [v for p, e in enumerate(events, 1) for v in old.check(p, e)]
    assert found
    log.close()
