"""The dashboard's feed lines: a sentence for the events people watch, every field of
any other, the task each event concerns, and never a token digest."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from event_factories import plain_submission, sidecar_decision

from tierlog.adapters.readside.event_lines import event_line, task_of
from tierlog.domain import events as ev

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _fields(version: int = 1) -> dict[str, object]:
    return {"originator_id": uuid4(), "originator_version": version, "timestamp": AT}


def test_watched_events_read_as_sentences() -> None:
    task = uuid4()
    submitted = plain_submission(task, 1, AT)
    assert event_line(submitted).startswith("submitted (normal) by ")
    assert task_of(submitted) == task
    routed = ev.TaskRouted(**_fields(), generation=1, decision=sidecar_decision(AT))
    assert event_line(routed) == "routed trivial -> sidecar"
    fallback = sidecar_decision(AT).__class__(
        **{
            **{f: getattr(sidecar_decision(AT), f) for f in ev.RoutingDecision.__struct_fields__},
            "effective_tier": "complex",
            "target_type": "claude",
            "fallback_used": True,
            "fallback_from_tier": "standard",
            "fallback_reason": "no_healthy_ollama_endpoints",
        }
    )
    line = event_line(ev.TaskRouted(**_fields(), generation=1, decision=fallback))
    assert line == ("routed complex -> claude, fallback from standard: no_healthy_ollama_endpoints")
    started = ev.FallbackTimerStarted(
        **_fields(),
        task_id=task,
        original_tier="standard",
        fallback_tier="complex",
        fires_at=AT,
        reason="no_healthy_ollama_endpoints",
    )
    assert event_line(started) == (
        "timer started: no candidate at standard (no_healthy_ollama_endpoints), falls back"
        " to complex at 2026-01-02T03:04:05+00:00"
    )
    assert task_of(started) == task
    fired = ev.FallbackTimerFired(
        **_fields(),
        task_id=task,
        original_tier="standard",
        fallback_tier="complex",
        reason="no_healthy_ollama_endpoints",
        wait_ms=5000,
    )
    assert event_line(fired) == "timer fired after 5000 ms: -> complex"


def test_any_other_event_shows_its_fields_and_never_a_token_digest() -> None:
    registered = ev.AgentRegistered(
        **_fields(),
        agent_id="agent-1",
        capabilities=("python",),
        ollama_host=None,
        token_sha256="ab" * 32,
    )
    line = event_line(registered)
    assert line == "agent_id=agent-1, capabilities=[python], ollama_host=None"
    assert task_of(registered) is None
    long = plain_submission(uuid4(), 1, AT)
    long = ev.TaskSubmitted(
        **{f: getattr(long, f) for f in ev.TaskSubmitted.__struct_fields__}
        | {"description": "x" * 500}
    )
    assert len(event_line(long)) < 120 and event_line(long).endswith("…")
