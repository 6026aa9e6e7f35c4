"""A log written by release 0.1.0 (topics ``domain.events:*``, see ``tests/data/README.md``)
decodes, audits clean, takes new commands under the new topics and serves its read
models, on a copy: the checked-in file is never changed."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections import Counter
from pathlib import Path
from uuid import UUID

import pytest
from releases import ADDED_SINCE_CHECKED_IN_LOGS, as_encoded_then
from wiring import runner_on, runtime_on

from tierlog.adapters.audit.digest import DigestFold, feed_from_log
from tierlog.adapters.audit.run import audit
from tierlog.adapters.history.time_travel import explain, fold_until, summarise_state
from tierlog.adapters.store.codec import LEGACY_ALIASES, topic_of
from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import commands as cmd
from tierlog.domain import events as ev
from tierlog.domain.clock import VirtualClock
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.state import SchedulerState
from tierlog.projections.registry import all_projections

LEGACY = Path(__file__).parents[1] / "data" / "log-0.1.0.db"
LEGACY_SHA256 = "9c514facedb45450969d62d92bec557ed2c8682b41a2764ae94ab51c10e3ab24"
LEGACY_EVENTS = 440
# The configuration the log recorded (tests/data/make_log_0_1_0.py.txt): a runtime with
# it appends no SchedulerConfigured, so the new events below are the commands' own.
CONFIG = SchedulerConfig(lease_s=60.0, fallback_wait_s=5.0, default_model="llama3:8b")


@pytest.fixture
def legacy_url(tmp_path: Path) -> str:
    """A copy of the legacy log (with no read models yet)."""
    copy = tmp_path / "legacy.db"
    shutil.copyfile(LEGACY, copy)
    return f"sqlite:///{copy}"


def _rows(url: str) -> list[tuple[int, str, bytes]]:
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute("SELECT rowid, topic, state FROM stored_events ORDER BY rowid").fetchall()


def _audit_clean(url: str, *, parallel: bool) -> int:
    log = EventLog(url)
    try:
        report = audit(log, parallel=parallel)
    finally:
        log.close()
    assert report.clean, report.violations[:3]
    return report.events


def _fold(log: EventLog, stop: int) -> SchedulerState:
    state = SchedulerState()
    for position, event in log.iter_events(stop=stop):
        state.apply(event, position)
    return state


def test_the_checked_in_log_is_the_one_release_0_1_0_wrote():
    assert hashlib.sha256(LEGACY.read_bytes()).hexdigest() == LEGACY_SHA256
    rows = _rows(f"sqlite:///{LEGACY}")
    assert len(rows) == LEGACY_EVENTS
    assert {topic for _, topic, _ in rows} == set(LEGACY_ALIASES)  # every type, old spelling


def test_every_legacy_event_decodes_as_its_current_type(legacy_url):
    log = EventLog(legacy_url)
    events = list(log.iter_events())
    assert [p for p, _ in events] == list(range(1, LEGACY_EVENTS + 1))
    # every type the release had is there
    assert {type(e) for _, e in events} == set(ev.EVENT_TYPES) - ADDED_SINCE_CHECKED_IN_LOGS
    codec = log.codec
    for (position, topic, state), (at, event) in zip(_rows(legacy_url), events, strict=True):
        assert position == at
        assert codec.event_type(topic) is type(event)
        assert LEGACY_ALIASES[topic] == topic_of(type(event))
        assert codec.decode(topic, state) == codec.decoder(topic)(state) == event
        # Read under its new topic the same payload is the same event, and re-encoding
        # gives the stored bytes: nothing of the payload was lost or reinterpreted.
        assert codec.decode(topic_of(type(event)), state) == event
        assert as_encoded_then(type(event).stored_name, codec.encode(event)) == state
    assert log.read(LEGACY_EVENTS - 1, 5) == events[-1:]
    task = next(e for _, e in events if isinstance(e, ev.TaskSubmitted)).originator_id
    assert log.events_of(task) == [e for _, e in events if e.originator_id == task]
    log.close()


def test_the_legacy_log_audits_clean(legacy_url):
    assert _audit_clean(legacy_url, parallel=False) == LEGACY_EVENTS


def _extend(url: str) -> tuple[UUID, UUID]:
    """Catch a runtime up on the legacy log and give it new work: a task that completes
    and one left queued. Returns their ids."""
    log = EventLog(url)
    last = log.read(log.head() - 1, 1)[0][1].timestamp
    runtime = runtime_on(log, CONFIG, VirtualClock(last))
    assert runtime.state.position == LEGACY_EVENTS
    assert len(runtime.state.tasks) >= 1  # the legacy log's tasks were folded
    run = runtime.execute
    run(cmd.RegisterAgent(agent_id="new-agent", capabilities=["new"]))
    done = run(cmd.SubmitTask(description="fix typo", needed_capabilities=["new"])).task_id
    generation = runtime.read(lambda st: st.tasks[done].generation)
    run(
        cmd.CompleteTask(
            agent_id="new-agent", task_id=done, generation=generation, result={"ok": 1}
        )
    )
    waiting = run(cmd.SubmitTask(description="later", needed_capabilities=["none"])).task_id
    log.close()
    return done, waiting


def test_new_commands_on_the_legacy_log_are_stored_under_the_new_topics(legacy_url):
    done, waiting = _extend(legacy_url)
    rows = _rows(legacy_url)
    old, new = rows[:LEGACY_EVENTS], rows[LEGACY_EVENTS:]
    assert old == _rows(f"sqlite:///{LEGACY}")  # no stored row was rewritten
    assert new and all(":" not in topic for _, topic, _ in new)
    log = EventLog(legacy_url)
    appended = [e for _, e in log.iter_events(after=LEGACY_EVENTS)]
    assert [topic for _, topic, _ in new] == [topic_of(type(e)) for e in appended]
    assert {"AgentRegistered", "TaskSubmitted", "TaskCompleted"} <= {t for _, t, _ in new}
    state = _fold(log, log.head())
    assert (state.tasks[done].state, state.tasks[waiting].state) == ("completed", "queued")
    log.close()


def test_the_mixed_log_audits_clean_and_serves_read_models_like_a_fold(legacy_url):
    _extend(legacy_url)
    assert _audit_clean(legacy_url, parallel=False) > LEGACY_EVENTS
    log = EventLog(legacy_url)
    runner = runner_on(log)
    assert runner.run_until_caught_up() == log.head()
    served = {
        r["task_id"]: r["state"] for r in runner.store.fetch("SELECT task_id, state FROM rm_tasks")
    }
    state = _fold(log, log.head())
    assert served == {str(t.task_id): t.state for t in state.tasks.values()}
    assert {"completed", "cancelled", "dead_lettered", "queued"} <= set(served.values())
    runner.close()
    log.close()
    # Now with read models to compare, and the worker process that decodes only the
    # topics its read models fold (it looks them up by event type, old spelling or new).
    for parallel in (False, True):
        _audit_clean(legacy_url, parallel=parallel)


def test_time_travel_reads_across_the_old_and_new_topics(legacy_url):
    done, _ = _extend(legacy_url)
    log = EventLog(legacy_url)
    head = log.head()
    for position in (LEGACY_EVENTS, head):  # the last legacy event; the mixed head
        travelled = summarise_state(fold_until(log, position))
        assert travelled["position"] == position
        tasks = _fold(log, position).tasks.values()
        assert travelled["counters"]["tasks_by_state"] == Counter(t.state for t in tasks)
    legacy_task = next(e for _, e in log.iter_events() if isinstance(e, ev.TaskSubmitted))
    assert explain(log, legacy_task.originator_id)[0]["event"] == "TaskSubmitted"
    assert [line["event"] for line in explain(log, done)][-1] == "TaskCompleted"
    assert all(line["position"] > LEGACY_EVENTS for line in explain(log, done))
    log.close()


def test_the_fold_that_decodes_only_what_it_needs_knows_both_spellings(legacy_url, monkeypatch):
    _extend(legacy_url)
    log = EventLog(legacy_url)
    tasks = [p for p in all_projections() if p.name == "tasks"]
    head = log.head()
    decoded: list[str] = []
    decoder = log.codec.decoder
    monkeypatch.setattr(log.codec, "decoder", lambda t: decoded.append(t) or decoder(t))
    from_log = DigestFold(tasks, {"tasks": head}, batch=100)
    feed_from_log(log, from_log)
    # Each topic of a folded type is decoded, in either spelling; no other is.
    assert {"TaskSubmitted", "domain.events:TaskSubmitted"} <= set(decoded)
    assert all(from_log.handles(log.codec.event_type(t)) for t in decoded)
    assert not {"AgentReserved", "domain.events:AgentReserved"} & set(decoded)
    every_event = DigestFold(tasks, {"tasks": head}, batch=100)
    every_event.feed(list(log.iter_events()))
    assert from_log.digests() == every_event.digests()
    log.close()
