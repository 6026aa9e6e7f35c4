"""An ``Idempotency-Key`` with a different body is a conflict (issue #13, SPEC §5.1);
the same body, as the submit command normalises it, returns the same task and appends
nothing, whatever state the task is in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from tierlog.domain import events as ev
from tierlog.domain.errors import IdempotencyConflictError

BODY: dict[str, Any] = {
    "description": "build the parser",
    "complexity_tier": "trivial",
    "needed_capabilities": ["python"],
    "file_hints": ["parser.py"],
    "metadata": {"ticket": 7, "labels": {"a": 1, "b": 2}},
    "complete_by": datetime(2026, 1, 2, 12, tzinfo=UTC),
}


def _first(h, **body: Any):
    result, events = h.run("submit_task", idempotency_key="k-1", **(BODY | body))
    assert result.created and h.names(events)[:2] == ["TaskSubmitted", "TaskClassified"]
    return result


def _again(h, **body: Any):
    result, events = h.run("submit_task", idempotency_key="k-1", **body)
    assert events == []
    return result


@pytest.mark.parametrize(
    "same",
    [
        pytest.param(dict(BODY), id="identical"),
        pytest.param(
            BODY | {"priority": "normal", "max_retries": 3, "submitted_by": "unknown"},
            id="defaults-spelt-out",
        ),
        pytest.param(
            BODY | {"metadata": {"labels": {"b": 2, "a": 1}, "ticket": 7}}, id="metadata-key-order"
        ),
        pytest.param(
            BODY | {"complete_by": datetime(2026, 1, 2, 14, tzinfo=timezone(timedelta(hours=2)))},
            id="deadline-in-another-zone",
        ),
        pytest.param(BODY | {"needed_capabilities": ("python",)}, id="tuple-or-list"),
    ],
)
def test_the_same_body_returns_the_same_task_and_appends_nothing(h, same):
    first = _first(h)
    before = h.state.snapshot()
    again = _again(h, **same)
    assert (again.task_id, again.created, again.state) == (first.task_id, False, "queued")
    assert h.state.snapshot() == before


DIFFERENT = {
    "description": "build the lexer",
    "priority": "urgent",
    "needed_capabilities": ["python", "rust"],
    "complexity_tier": "standard",
    "file_hints": ["lexer.py"],
    "verification_steps": ["pytest"],
    "success_criteria": ["green"],
    "repo": "acme/parser",
    "branch": "main",
    "metadata": {"ticket": 8, "labels": {"a": 1, "b": 2}},
    "max_retries": 5,
    "complete_by": datetime(2026, 1, 2, 12, 0, 1, tzinfo=UTC),
    "submitted_by": "alice",
}


@pytest.mark.parametrize(("field", "value"), DIFFERENT.items(), ids=list(DIFFERENT))
def test_a_different_body_under_the_key_is_a_conflict_naming_the_key(h, field, value):
    first = _first(h)
    err = h.reject("submit_task", idempotency_key="k-1", **(BODY | {field: value}))
    assert isinstance(err, IdempotencyConflictError)
    assert (err.code, err.field) == ("idempotency_conflict", "idempotency_key")
    assert "Idempotency-Key 'k-1'" in err.message
    assert str(first.task_id) in err.message


def test_a_field_left_out_is_its_default_so_leaving_one_out_can_conflict(h):
    _first(h, priority="high")
    body = {k: v for k, v in BODY.items()}
    assert isinstance(
        h.reject("submit_task", idempotency_key="k-1", **body), IdempotencyConflictError
    )


def test_the_same_body_after_the_deadline_passed_is_still_the_same_request(h):
    first = _first(h)
    h.clock.set(BODY["complete_by"] + timedelta(hours=1))
    h.run()
    assert h.task(first.task_id).dead_letter_reason == "deadline_passed"
    again = _again(h, **BODY)  # not "complete_by must be in the future"
    assert (again.task_id, again.state) == (first.task_id, "dead_lettered")


@pytest.mark.parametrize("end", ["completed", "cancelled"])
def test_a_finished_task_answers_the_same_way(h, end):
    first = _first(h, complete_by=None)
    if end == "cancelled":
        h.run("cancel_task", task_id=first.task_id)
    else:
        h.agent("a1", capabilities=["python"])
        h.run("complete_task", agent_id="a1", task_id=first.task_id, generation=1)
    assert _again(h, **(BODY | {"complete_by": None})).state == end
    err = h.reject("submit_task", idempotency_key="k-1", description="another thing")
    assert isinstance(err, IdempotencyConflictError)


def test_the_digest_is_kept_only_for_keyed_submissions(h):
    keyed = _first(h)
    plain = h.submit("trivial")
    assert len(h.task(keyed.task_id).submission_digest or "") == 64
    assert h.task(plain).submission_digest is None
    assert h.of(h.log, ev.TaskSubmitted)[0].idempotency_key == "k-1"
