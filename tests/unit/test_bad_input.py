"""Bad input: every command rejects it with a clear DomainError, emits nothing, changes nothing."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import pytest

from tierlog.domain.errors import (
    DomainError,
    InvalidTransitionError,
    NotFoundError,
    NotYourTaskError,
    StaleGenerationError,
    ValidationError,
)

V, NF, IT = ValidationError, NotFoundError, InvalidTransitionError
UNKNOWN_TASK = uuid4()


@pytest.fixture
def world(h):
    """Endpoint ``gpu-a:11434`` healthy; agent ``a1`` holds task ``assigned`` at ``gen``.

    Also: a dead-lettered task, a queued task nobody can take, an idle agent ``a2``,
    an offline agent ``off``, a deregistered agent ``gone``, a deregistered endpoint.
    """
    endpoint = h.endpoint("gpu-a")
    h.run("deregister_endpoint", endpoint_id=h.endpoint("old"))
    h.agent("a1")
    dead = h.submit("trivial", max_retries=1)
    h.run("fail_task", agent_id="a1", task_id=dead, generation=1, error="boom")
    assigned = h.submit("trivial")
    h.agent("a2", capabilities=["python"])
    done = h.submit("trivial", needed_capabilities=["python"])
    h.run("complete_task", agent_id="a2", task_id=done, generation=1)
    queued = h.submit("trivial", needed_capabilities=["nobody-has-this"])
    for name in ("off", "gone"):
        h.agent(name, capabilities=["go"])
    h.run("mark_agent_offline", agent_id="off")
    h.run("deregister_agent", agent_id="gone")
    w = SimpleNamespace(
        h=h, endpoint=endpoint, dead=dead, assigned=assigned, queued=queued, done=done
    )
    assert h.task(done).state == "completed"
    assert h.task(dead).state == "dead_lettered"
    assert (h.task(assigned).state, h.task(assigned).assigned_to) == ("assigned", "a1")
    w.gen = h.task(assigned).generation
    w.dead_gen = h.task(dead).generation
    assert h.task(queued).state == "queued"
    return w


BASES: dict[str, Any] = {
    "submit_task": lambda w: {"description": "do it", "complexity_tier": "trivial"},
    "cancel_task": lambda w: {"task_id": w.queued},
    "retry_task": lambda w: {"task_id": w.dead},
    "heartbeat": lambda w: {"agent_id": "a1", "task_id": w.assigned, "generation": w.gen},
    "complete_task": lambda w: {"agent_id": "a1", "task_id": w.assigned, "generation": w.gen},
    "fail_task": lambda w: {
        "agent_id": "a1",
        "task_id": w.assigned,
        "generation": w.gen,
        "error": "it broke",
    },
    "register_agent": lambda w: {"agent_id": "new", "capabilities": ["py"], "ollama_host": "gpu-a"},
    "deregister_agent": lambda w: {"agent_id": "a2"},
    "mark_agent_offline": lambda w: {"agent_id": "a2"},
    "register_endpoint": lambda w: {"host": "gpu-b", "port": 11434, "models": ["llama3"]},
    "report_health": lambda w: {"endpoint_id": w.endpoint, "ok": True},
    "report_resources": lambda w: {"endpoint_id": w.endpoint, "cpu_percent": 50.0},
    "deregister_endpoint": lambda w: {"endpoint_id": w.endpoint},
}


def case(field_value: dict[str, Any], exc: type[DomainError], field: str | None, text=None):
    """One bad input: the argument override, the error type, its field and message text."""
    label = ",".join(
        f"{k}={'<from world>' if callable(v) else repr(v)[:30]}" for k, v in field_value.items()
    )
    return pytest.param(field_value, exc, field, text, id=label)


def check(world, command, override, exc, field, text):
    kwargs = BASES[command](world)
    kwargs.update({k: v(world) if callable(v) else v for k, v in override.items()})
    err = world.h.reject(command, **kwargs)
    assert type(err) is exc, f"{type(err).__name__}: {err}"
    assert err.field == field
    message = str(err)
    assert message == err.message
    expected = text if text is not None else (field or "").split("[")[0]
    assert expected in message, message


@pytest.mark.parametrize("command", sorted(BASES))
def test_base_arguments_are_valid(world, command):
    world.h.run(command, **BASES[command](world))


NAIVE = datetime(2030, 1, 1)


@pytest.mark.parametrize(
    ("override", "exc", "field", "text"),
    [
        *(case({"description": d}, V, "description") for d in ["", "   ", "\n\t", None, 42, ["x"]]),
        *(case({"priority": p}, V, "priority") for p in ["asap", "URGENT", 0, None]),
        *(case({"complexity_tier": t}, V, "complexity_tier") for t in ["epic", "", "Trivial", 3]),
        *(case({"max_retries": m}, V, "max_retries") for m in [-1, True, "3", 1.5, 101, None]),
        *(
            case({"metadata": m}, V, "metadata")
            for m in [[], "x", [("a", 1)], {1: "a"}, {"a": object()}]
        ),
        *(
            case({"complete_by": c}, V, "complete_by")
            for c in [
                NAIVE,
                lambda w: w.h.now(),
                lambda w: w.h.now() - timedelta(seconds=1),
                "2030-01-01T00:00:00Z",
                1893456000,
            ]
        ),
        case({"needed_capabilities": "python"}, V, "needed_capabilities"),
        case({"needed_capabilities": [""]}, V, "needed_capabilities[0]"),
        case({"needed_capabilities": ["ok", 1]}, V, "needed_capabilities[1]"),
        case({"needed_capabilities": {"python": 1}}, V, "needed_capabilities"),
        case({"file_hints": "a.py"}, V, "file_hints"),
        case({"verification_steps": [None]}, V, "verification_steps[0]"),
        case({"success_criteria": 5}, V, "success_criteria"),
        case({"repo": ""}, V, "repo"),
        case({"branch": "  "}, V, "branch"),
        case({"submitted_by": ""}, V, "submitted_by"),
        case({"submitted_by": "x" * 201}, V, "submitted_by"),
        case({"idempotency_key": ""}, V, "idempotency_key"),
        case({"idempotency_key": 7}, V, "idempotency_key"),
    ],
)
def test_submit_task(world, override, exc, field, text):
    check(world, "submit_task", override, exc, field, text)


TASK_ID_CASES = [
    case({"task_id": UNKNOWN_TASK}, NF, "task_id", str(UNKNOWN_TASK)),
    case({"task_id": str(UNKNOWN_TASK)}, NF, "task_id", str(UNKNOWN_TASK)),
    case({"task_id": "not-a-uuid"}, V, "task_id"),
    case({"task_id": ""}, V, "task_id"),
    case({"task_id": 42}, V, "task_id"),
    case({"task_id": None}, V, "task_id"),
]


@pytest.mark.parametrize(
    ("override", "exc", "field", "text"),
    [
        *TASK_ID_CASES,
        # A running task can be cancelled (issue #13); a completed one cannot.
        case({"task_id": lambda w: w.done}, IT, "task_id", "completed"),
        case({"requested_by": ""}, V, "requested_by"),
        case({"reason": "  "}, V, "reason"),
        case({"reason": 3}, V, "reason"),
    ],
)
def test_cancel_task(world, override, exc, field, text):
    check(world, "cancel_task", override, exc, field, text)


@pytest.mark.parametrize(
    ("override", "exc", "field", "text"),
    [
        *TASK_ID_CASES,
        case({"task_id": lambda w: w.queued}, IT, "task_id", "queued"),
        case({"task_id": lambda w: w.assigned}, IT, "task_id", "assigned"),
        case({"requested_by": ""}, V, "requested_by"),
        case({"requested_by": None}, V, "requested_by"),
    ],
)
def test_retry_task(world, override, exc, field, text):
    check(world, "retry_task", override, exc, field, text)


HELD_TASK_CASES = [
    *TASK_ID_CASES,
    case({"agent_id": "ghost"}, NF, "agent_id", "ghost"),
    case({"agent_id": ""}, V, "agent_id"),
    case({"agent_id": "a 1"}, V, "agent_id"),
    case({"agent_id": None}, V, "agent_id"),
    case({"agent_id": 7}, V, "agent_id"),
    case({"agent_id": "a2"}, NotYourTaskError, "agent_id", "another agent"),
    *(case({"generation": g}, V, "generation") for g in [-1, "1", True, None, 1.5]),
    case({"generation": lambda w: w.gen - 1}, StaleGenerationError, "generation", "stale"),
    case({"generation": lambda w: w.gen + 1}, StaleGenerationError, "generation", "stale"),
    case({"task_id": lambda w: w.queued, "generation": 0}, IT, "task_id", "queued"),
    case(
        {"task_id": lambda w: w.dead, "generation": lambda w: w.dead_gen},
        IT,
        "task_id",
        "dead_lettered",
    ),
]


@pytest.mark.parametrize(("override", "exc", "field", "text"), HELD_TASK_CASES)
def test_heartbeat(world, override, exc, field, text):
    check(world, "heartbeat", override, exc, field, text)


@pytest.mark.parametrize(
    ("override", "exc", "field", "text"),
    [
        *HELD_TASK_CASES,
        case({"result": object()}, V, "result"),
        case({"result": {"a": object()}}, V, "result"),
    ],
)
def test_complete_task(world, override, exc, field, text):
    check(world, "complete_task", override, exc, field, text)


@pytest.mark.parametrize(
    ("override", "exc", "field", "text"),
    [*HELD_TASK_CASES, *(case({"error": e}, V, "error") for e in ["", "   ", None, 5])],
)
def test_fail_task(world, override, exc, field, text):
    check(world, "fail_task", override, exc, field, text)


@pytest.mark.parametrize(
    ("override", "exc", "field", "text"),
    [
        *(
            case({"agent_id": a}, V, "agent_id")
            for a in ["", "  ", "has space", None, 5, "x" * 201]
        ),
        case({"capabilities": "python"}, V, "capabilities"),
        case({"capabilities": [""]}, V, "capabilities[0]"),
        case({"capabilities": [3]}, V, "capabilities[0]"),
        case({"capabilities": {"python"}}, V, "capabilities"),
        case({"ollama_host": ""}, V, "ollama_host"),
        case({"ollama_host": 11434}, V, "ollama_host"),
        case({"agent_id": "a1"}, IT, "agent_id", "a1"),
    ],
)
def test_register_agent(world, override, exc, field, text):
    check(world, "register_agent", override, exc, field, text)


AGENT_CASES = [
    case({"agent_id": "ghost"}, NF, "agent_id", "ghost"),
    case({"agent_id": "gone"}, NF, "agent_id", "gone"),
    *(case({"agent_id": a}, V, "agent_id") for a in ["", "a b", None, 3]),
]


@pytest.mark.parametrize(("override", "exc", "field", "text"), AGENT_CASES)
def test_deregister_agent(world, override, exc, field, text):
    check(world, "deregister_agent", override, exc, field, text)


@pytest.mark.parametrize(
    ("override", "exc", "field", "text"),
    [
        *AGENT_CASES,
        case({"reason": ""}, V, "reason"),
        case({"reason": 5}, V, "reason"),
        case({"agent_id": "off"}, IT, "agent_id", "already offline"),
    ],
)
def test_mark_agent_offline(world, override, exc, field, text):
    check(world, "mark_agent_offline", override, exc, field, text)


@pytest.mark.parametrize(
    ("override", "exc", "field", "text"),
    [
        *(case({"port": p}, V, "port") for p in [0, 70000, -1, 65536, "11434", True, 1.5, None]),
        *(case({"host": x}, V, "host") for x in ["", "gpu b", None, 5, "h" * 201]),
        case({"models": "llama3"}, V, "models"),
        case({"models": [""]}, V, "models[0]"),
        case({"models": [1]}, V, "models[0]"),
    ],
)
def test_register_endpoint(world, override, exc, field, text):
    check(world, "register_endpoint", override, exc, field, text)


ENDPOINT_CASES = [
    case({"endpoint_id": "nope:1"}, NF, "endpoint_id", "nope:1"),
    case({"endpoint_id": "old:11434"}, NF, "endpoint_id", "old:11434"),
    *(case({"endpoint_id": e}, V, "endpoint_id") for e in ["", "a b:1", None, 5]),
]


@pytest.mark.parametrize(
    ("override", "exc", "field", "text"),
    [
        *ENDPOINT_CASES,
        *(case({"ok": o}, V, "ok") for o in ["yes", "true", 1, 0, None]),
        case({"models": "llama3"}, V, "models"),
        case({"models": [""]}, V, "models[0]"),
    ],
)
def test_report_health(world, override, exc, field, text):
    check(world, "report_health", override, exc, field, text)


@pytest.mark.parametrize(
    ("override", "exc", "field", "text"),
    [
        *ENDPOINT_CASES,
        *(
            case({"cpu_percent": c}, V, "cpu_percent")
            for c in [150, 100.5, -1, "50", True, math.nan, math.inf]
        ),
        *(case({"ram_used_bytes": r}, V, "ram_used_bytes") for r in [-1, 1.5, "8"]),
        case({"ram_total_bytes": -(2**40)}, V, "ram_total_bytes"),
        case({"vram_used_bytes": -5}, V, "vram_used_bytes"),
        case({"vram_total_bytes": True}, V, "vram_total_bytes"),
        case({"repo": ""}, V, "repo"),
        case({"repo": 3}, V, "repo"),
    ],
)
def test_report_resources(world, override, exc, field, text):
    check(world, "report_resources", override, exc, field, text)


@pytest.mark.parametrize(("override", "exc", "field", "text"), ENDPOINT_CASES)
def test_deregister_endpoint(world, override, exc, field, text):
    check(world, "deregister_endpoint", override, exc, field, text)


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_metadata_and_results_refuse_numbers_json_cannot_carry(bad):
    from uuid import uuid4

    from tierlog.domain.commands import CompleteTask, SubmitTask

    with pytest.raises(ValidationError, match="NaN or infinite"):
        SubmitTask(description="x", metadata={"x": [1, {"y": bad}]})
    with pytest.raises(ValidationError, match="NaN or infinite"):
        CompleteTask(agent_id="a", task_id=uuid4(), generation=1, result={"score": bad})


def test_nul_characters_are_refused_before_anything_is_appended():
    from uuid import uuid4

    from tierlog.domain.commands import FailTask, SubmitTask

    with pytest.raises(ValidationError, match="NUL"):
        FailTask(agent_id="a", task_id=uuid4(), generation=1, error="segfault\x00")
    with pytest.raises(ValidationError, match="NUL"):
        SubmitTask(description="x", metadata={"note": "a\x00b"})


def test_waiting_reason_compares_deadlines_as_times_not_text():
    from tierlog.projections.queue import waiting_reason

    row = {
        "complete_by": "2026-01-01T00:00:00-10:00",
        "tier": "complex",
        "effective_tier": "complex",
    }
    # 10:00 UTC is before the deadline (10:00 UTC = 00:00 at -10:00 is the same instant + 0).
    assert not waiting_reason(row, "2026-01-01T09:59:00+00:00").startswith("overdue")
    assert waiting_reason(row, "2026-01-01T10:00:00+00:00").startswith("overdue")
