"""Limits on what a command carries: the ceilings on the types, the configured limits in
the service, JSON checked without recursion, and one command's fault isolated."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import msgspec
import pytest

from tierlog.domain import commands as cmd
from tierlog.domain import events as ev
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.errors import (
    InternalError,
    UndecodableEventError,
    ValidationError,
)
from tierlog.domain.limits import (
    MAX_JSON_DEPTH,
    CommandLimits,
    JsonLimitError,
    check_json,
)
from tierlog.domain.service import SchedulerService
from tierlog.domain.unit_of_work import UnitOfWork


def nested(depth: int, leaf: Any = 1) -> Any:
    value: Any = leaf
    for _ in range(depth):
        value = [value]
    return value


# --- check_json: the walk -----------------------------------------------------------------


def test_a_value_ten_thousand_deep_is_refused_at_the_depth_limit_without_recursion():
    with pytest.raises(JsonLimitError, match=r"deeper than 32 levels \(max_json_depth\)"):
        check_json(nested(10_000), CommandLimits())
    assert check_json(nested(32), CommandLimits()) == len("[" * 32 + "1" + "]" * 32)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"a": [1, {"b": math.nan}]}, r"NaN or infinite\) \(at \.a\[1\]\.b\)"),
        ([math.inf], "NaN or infinite"),
        ({"k\x00": 1}, "NUL"),
        ({"k": "a\x00b"}, r"NUL characters \(at \.k\)"),
        ({"k": "\ud800"}, "lone surrogate"),
        ({1: "x"}, "keys must be strings"),
        ({"n": 2**64}, r"64-bit range \(at \.n\)"),
        ({"s": {1, 2}}, r"a set is not a JSON value \(at \.s\)"),
        ({"s": "x" * 11}, r"11 characters is over the limit of 10 \(max_string_chars\)"),
        ({"l": list(range(6))}, r"6 entries, over the limit of 5 \(max_list_items\) \(at \.l\)"),
    ],
)
def test_what_the_log_cannot_carry_is_refused_naming_where(value, text):
    limits = CommandLimits(max_string_chars=10, max_list_items=5)
    with pytest.raises(JsonLimitError, match=text):
        check_json(value, limits)


def test_the_encoded_size_is_checked_against_the_limit_named():
    with pytest.raises(JsonLimitError, match=r"over the limit of 10 \(max_result_bytes\)"):
        check_json("x" * 20, CommandLimits(), max_bytes=10, setting="max_result_bytes")


@pytest.mark.parametrize(
    "bad",
    [{"max_json_depth": 0}, {"max_json_depth": MAX_JSON_DEPTH + 1}, {"max_result_bytes": True}],
)
def test_command_limits_stay_within_their_ceilings(bad):
    with pytest.raises(ValidationError, match=next(iter(bad))):
        CommandLimits(**bad)


# --- the ceilings on the command types ------------------------------------------------------


def test_a_result_nested_480_deep_is_a_validation_error_not_a_recursion_error():
    with pytest.raises(ValidationError, match="result: nested deeper than 64") as info:
        cmd.CompleteTask(agent_id="a1", task_id=uuid4(), generation=1, result=nested(480))
    assert info.value.field == "result"
    with pytest.raises(ValidationError, match="metadata"):
        cmd.SubmitTask(description="x", metadata={"a": nested(5_000)})


# --- configured limits, checked by the service before it decides ----------------------------

TIGHT = CommandLimits(
    max_json_depth=3,
    max_string_chars=50,
    max_list_items=2,
    max_metadata_bytes=40,
    max_result_bytes=30,
)


@pytest.fixture
def tight(h):
    h.svc.limits = TIGHT
    return h


@pytest.mark.parametrize(
    ("kw", "field", "limit"),
    [
        ({"metadata": {"k": "v" * 40}}, "metadata", "max_metadata_bytes"),
        ({"metadata": {"a": {"b": {"c": {}}}}}, "metadata", "max_json_depth"),
        ({"metadata": {"a": [1, 2, 3]}}, "metadata", "max_list_items"),
        ({"description": "d" * 51}, "description", "max_string_chars"),
        ({"needed_capabilities": ["a", "b", "c"]}, "needed_capabilities", "max_list_items"),
        ({"file_hints": ["f" * 51]}, "file_hints[0]", "max_string_chars"),
    ],
)
def test_a_submission_past_a_configured_limit_names_field_and_limit(tight, kw, field, limit):
    error = tight.reject("submit_task", **{"description": "ok", **kw})
    assert isinstance(error, ValidationError)
    assert error.field == field.partition("[")[0] or error.field == field
    assert limit in error.message and field in error.message


def test_a_result_past_the_configured_size_is_refused_and_the_task_stays_assigned(tight):
    tight.endpoint()
    tight.agent("a1")
    task = tight.submit("trivial")
    generation = tight.task(task).generation
    error = tight.reject(
        "complete_task", agent_id="a1", task_id=task, generation=generation, result="r" * 40
    )
    assert (error.field, "max_result_bytes" in error.message) == ("result", True)
    assert tight.task(task).state == "assigned"


def test_the_defaults_accept_what_the_ceilings_accept_within_them(h):
    h.submit("trivial", metadata={"nested": nested(20), "text": "t" * 60_000})


# --- one command's fault fails it alone --------------------------------------------------------


def test_an_unexpected_exception_fails_its_command_alone(h):
    h.svc._handlers[cmd.CancelTask] = lambda command, uow, now: 1 / 0
    queued = h.submit("trivial", needed_capabilities=["nobody"])
    before = h.state.snapshot()
    commands = [
        cmd.SubmitTask(description="first"),
        cmd.CancelTask(task_id=queued),
        cmd.SubmitTask(description="second"),
    ]
    with UnitOfWork(h.state) as uow:
        results = h.svc.handle_all(uow, commands, h.now())
        fault = results[1]
        assert isinstance(fault, InternalError)
        assert isinstance(fault.__cause__, ZeroDivisionError)
        assert "cancel_task" in fault.message
        assert [type(e).__name__ for e in uow.events].count("TaskSubmitted") == 2
        assert not any(isinstance(e, ev.TaskCancelled) for e in uow.events)
        uow.rollback()
    assert h.state.snapshot() == before


def test_events_the_store_would_refuse_fail_their_command_alone():
    def refuse_results(events):
        for event in events:
            if isinstance(event, ev.TaskSubmitted) and event.description == "poison":
                raise UndecodableEventError("refused", field="TaskSubmitted")

    svc = SchedulerService(SchedulerConfig(), check_events=refuse_results)
    with UnitOfWork(svc.state) as uow:
        results = svc.handle_all(
            uow,
            [cmd.SubmitTask(description="poison"), cmd.SubmitTask(description="fine")],
            datetime.now(UTC),
        )
        assert isinstance(results[0], UndecodableEventError)
        assert [e.description for e in uow.events if isinstance(e, ev.TaskSubmitted)] == ["fine"]


# --- the policy's own values -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"health_failures_to_unhealthy": 10**30}, "health_failures_to_unhealthy"),
        ({"default_model": "llama\x00"}, "default_model"),
        ({"default_model": "\udcff"}, "default_model"),
        ({"default_model": "m" * 1001}, "default_model"),
    ],
)
def test_the_policy_refuses_values_the_log_or_read_models_cannot_carry(kw, field):
    with pytest.raises(ValidationError) as info:
        SchedulerConfig(**kw)
    assert info.value.field == field


@pytest.mark.parametrize(
    "when", ["9999-12-31T23:59:59-23:59", "9001-01-01T00:00:00+00:00", "0001-01-01T00:00:00+23:59"]
)
def test_a_deadline_past_the_calendars_end_in_utc_is_refused(when):
    with pytest.raises(ValidationError, match="complete_by: must be a time") as info:
        cmd.SubmitTask(description="d", complete_by=datetime.fromisoformat(when))
    assert info.value.field == "complete_by"


@pytest.mark.parametrize("empty", [{}, [], ()])
def test_an_empty_container_is_its_encoded_two_bytes_and_still_meets_the_size_limit(empty):
    assert check_json(empty, CommandLimits()) == len(msgspec.json.encode(empty)) == 2
    with pytest.raises(JsonLimitError, match=r"2 bytes encoded, over the limit of 1"):
        check_json(empty, CommandLimits(), max_bytes=1)
