from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from tierlog.domain.aggregates.endpoint import EndpointRecord, EndpointResources
from tierlog.domain.aggregates.task import TaskRecord
from tierlog.domain.config import DEFAULT_LADDER, SchedulerConfig, TierRule
from tierlog.domain.errors import ValidationError
from tierlog.domain.events import RoutingDecision
from tierlog.domain.routing import (
    GIB,
    decide_route,
    fallback_reason_for,
    has_candidate,
    ollama_candidates,
    score_endpoint,
    select_model,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
REASON = "inferred:standard (confidence 0.67, word_count=14, files=1)"
CFG = SchedulerConfig()
WARM = SchedulerConfig(default_model="llama3")


def res(age_s: float = 0.0, **kw: object) -> EndpointResources:
    fields = dict.fromkeys(("cpu_percent", "ram_used_bytes", "ram_total_bytes"))
    fields |= dict.fromkeys(("vram_used_bytes", "vram_total_bytes", "repo"))
    return EndpointResources(**(fields | kw), reported_at=NOW - timedelta(seconds=age_s))


def ep(eid: str = "gpu-a:11434", order: int = 0, **kw: object) -> EndpointRecord:
    host, port = eid.split(":")
    fields: dict[str, object] = {"models": ("qwen2",), "status": "healthy"} | kw
    return EndpointRecord(
        endpoint_id=eid, version=1, host=host, port=int(port), registration_order=order, **fields
    )


def task(route_tier: str = "standard", **kw: object) -> TaskRecord:
    return TaskRecord(
        task_id=UUID(int=1),
        version=1,
        position=7,
        priority="normal",
        needed_capabilities=(),
        repo=kw.pop("repo", None),
        route_tier=route_tier,
        classification_reason=REASON,
        state="queued",
        generation=0,
        retry_count=0,
        max_retries=3,
        submitted_at=NOW,
        queued_at=NOW,
        complete_by=None,
        **kw,
    )


def score(endpoint: EndpointRecord, repo: str | None = None, config: SchedulerConfig = CFG):
    return score_endpoint(endpoint, repo, config, NOW)


# --- score factors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resources", "factor", "value"),
    [
        (None, "load", 0.5),
        (res(cpu_percent=None), "load", 0.5),
        (res(cpu_percent=0.0), "load", 1.0),
        (res(cpu_percent=25.0), "load", 0.75),
        (res(cpu_percent=50.0), "load", 0.5),
        (res(cpu_percent=80.0), "load", 0.2),
        (res(cpu_percent=100.0), "load", 0.0),
        (None, "capacity", 1.0),
        (res(ram_total_bytes=None), "capacity", 1.0),
        (res(ram_total_bytes=0), "capacity", 1.0),
        (res(ram_total_bytes=8 * GIB), "capacity", 0.5),
        (res(ram_total_bytes=16 * GIB), "capacity", 1.0),
        (res(ram_total_bytes=20 * GIB), "capacity", 1.25),
        (res(ram_total_bytes=24 * GIB), "capacity", 1.5),
        (res(ram_total_bytes=64 * GIB), "capacity", 1.5),
        (None, "vram", 0.9),
        (res(vram_used_bytes=1, vram_total_bytes=None), "vram", 0.9),
        (res(vram_used_bytes=0, vram_total_bytes=0), "vram", 0.9),
        (res(vram_used_bytes=None, vram_total_bytes=8 * GIB), "vram", 0.9),
        (res(vram_used_bytes=0, vram_total_bytes=8 * GIB), "vram", 1.0),
        (res(vram_used_bytes=2 * GIB, vram_total_bytes=8 * GIB), "vram", 0.95),
        (res(vram_used_bytes=4 * GIB, vram_total_bytes=8 * GIB), "vram", 0.9),
        (res(vram_used_bytes=8 * GIB, vram_total_bytes=8 * GIB), "vram", 0.8),
    ],
)
def test_resource_factors(resources: EndpointResources | None, factor: str, value: float) -> None:
    assert GIB == 1024**3
    assert getattr(score(ep(resources=resources)), factor) == pytest.approx(value)


@pytest.mark.parametrize(
    ("default_model", "models", "warm"),
    [
        (None, ("llama3",), 1.0),
        ("llama3", ("llama3",), 1.15),
        ("llama3", ("qwen2", "llama3"), 1.15),
        ("llama3", ("qwen2",), 1.0),
        ("llama3:8b", ("llama3",), 1.0),
    ],
)
def test_warm_factor(default_model: str | None, models: tuple[str, ...], warm: float) -> None:
    config = SchedulerConfig(default_model=default_model)
    assert score(ep(models=models), config=config).warm == warm


@pytest.mark.parametrize(
    ("resources", "task_repo", "affinity"),
    [
        (res(repo="acme/api"), "acme/api", 1.05),
        (res(repo="acme/web"), "acme/api", 1.0),
        (res(repo=None), "acme/api", 1.0),
        (res(repo="acme/api"), None, 1.0),
        (res(repo=None), None, 1.0),
        (None, "acme/api", 1.0),
        (res(repo="acme/api", age_s=91), "acme/api", 1.0),
    ],
)
def test_affinity_factor(
    resources: EndpointResources | None, task_repo: str | None, affinity: float
) -> None:
    assert score(ep(resources=resources), repo=task_repo).affinity == affinity


FULL = {
    "cpu_percent": 20.0,
    "ram_total_bytes": 32 * GIB,
    "vram_used_bytes": 2 * GIB,
    "vram_total_bytes": 8 * GIB,
    "repo": "r",
}


@pytest.mark.parametrize(
    ("age_s", "stale_s", "fresh"),
    [
        (0, 90.0, True),
        (90, 90.0, True),
        (91, 90.0, False),
        (600, 90.0, False),
        (10, 10.0, True),
        (11, 10.0, False),
    ],
)
def test_stale_resources_count_as_unknown(age_s: float, stale_s: float, fresh: bool) -> None:
    config = SchedulerConfig(resource_stale_s=stale_s)
    s = score(ep(resources=res(**FULL, age_s=age_s)), repo="r", config=config)
    factors = (s.load, s.capacity, s.vram, s.affinity)
    if fresh:
        assert factors == pytest.approx((0.8, 1.5, 0.95, 1.05))
    else:
        assert factors == (0.5, 1.0, 0.9, 1.0)


def test_score_is_product_of_factors() -> None:
    s = score(ep(models=("llama3",), resources=res(**FULL)), repo="r", config=WARM)
    assert (s.load, s.capacity, s.vram, s.warm, s.affinity) == pytest.approx(
        (0.8, 1.5, 0.95, 1.15, 1.05)
    )
    assert s.score == pytest.approx(0.8 * 1.5 * 0.95 * 1.15 * 1.05)
    assert s.endpoint_id == "gpu-a:11434"
    assert score(ep()).score == pytest.approx(0.5 * 1.0 * 0.9 * 1.0 * 1.0)


# --- candidates and model selection --------------------------------------------------


def test_ollama_candidates_healthy_with_models_only() -> None:
    endpoints = [
        ep("a:1", status="unknown"),
        ep("b:1", status="unhealthy"),
        ep("c:1", status="deregistered"),
        ep("d:1", models=()),
        ep("e:1"),
        ep("f:1", models=("x", "y")),
    ]
    assert [e.endpoint_id for e in ollama_candidates(endpoints)] == ["e:1", "f:1"]


@pytest.mark.parametrize(
    ("default_model", "models", "selected"),
    [
        ("llama3", ("qwen2", "llama3"), "llama3"),
        ("llama3", ("qwen2", "mistral"), "qwen2"),
        (None, ("mistral", "llama3"), "mistral"),
    ],
)
def test_select_model(default_model: str | None, models: tuple[str, ...], selected: str) -> None:
    assert select_model(ep(models=models), SchedulerConfig(default_model=default_model)) == selected


def ids(decision: RoutingDecision) -> list[str]:
    return [c.endpoint_id for c in decision.candidates]


def test_decide_route_highest_score_first() -> None:
    endpoints = [
        ep("a:1", resources=res(cpu_percent=80.0), order=0),
        ep("b:1", resources=res(cpu_percent=10.0), order=1),
        ep("c:1", resources=res(cpu_percent=50.0), order=2),
    ]
    d = decide_route(task(), CFG, endpoints, 3, NOW)
    assert d is not None
    assert ids(d) == ["b:1", "c:1", "a:1"]
    assert [c.score for c in d.candidates] == sorted((c.score for c in d.candidates), reverse=True)
    assert (d.selected_endpoint, d.selected_model, d.candidate_count) == ("b:1", "qwen2", 3)


@pytest.mark.parametrize("names", [["zeta:1", "alpha:1", "mid:1"], ["mid:1", "zeta:1", "alpha:1"]])
def test_ties_keep_registration_order(names: list[str]) -> None:
    endpoints = [ep(n, order=i) for i, n in enumerate(names)]
    d = decide_route(task(), CFG, endpoints, 0, NOW)
    assert d is not None
    assert ids(d) == names
    assert d.selected_endpoint == names[0]


def test_ties_break_only_by_equal_score() -> None:
    endpoints = [ep("a:1", order=0), ep("b:1", resources=res(cpu_percent=49.0), order=1), ep("c:1")]
    d = decide_route(task(), CFG, endpoints, 0, NOW)
    assert d is not None and ids(d) == ["b:1", "a:1", "c:1"]


def test_warm_endpoint_wins_and_serves_default_model() -> None:
    endpoints = [ep("a:1", models=("qwen2",)), ep("b:1", models=("qwen2", "llama3"), order=1)]
    d = decide_route(task(), WARM, endpoints, 0, NOW)
    assert d is not None
    assert (d.selected_endpoint, d.selected_model) == ("b:1", "llama3")
    assert [c.warm for c in d.candidates] == [1.15, 1.0]


def test_repo_affinity_wins() -> None:
    endpoints = [
        ep("a:1", resources=res(repo="acme/web")),
        ep("b:1", resources=res(repo="acme/api"), order=1),
    ]
    d = decide_route(task(repo="acme/api"), CFG, endpoints, 0, NOW)
    assert d is not None and d.selected_endpoint == "b:1"
    assert [c.affinity for c in d.candidates] == [1.05, 1.0]


def test_stale_report_does_not_count() -> None:
    endpoints = [
        ep("a:1", resources=res(cpu_percent=0.0, age_s=120)),  # stale: load 0.5, not 1.0
        ep("b:1", resources=res(cpu_percent=40.0, age_s=5), order=1),  # fresh: load 0.6
    ]
    d = decide_route(task(), CFG, endpoints, 0, NOW)
    assert d is not None and ids(d) == ["b:1", "a:1"]
    assert d.candidates[1].load == 0.5


def test_unusable_endpoints_are_not_candidates() -> None:
    endpoints = [
        ep("a:1", status="unhealthy", resources=res(cpu_percent=0.0)),
        ep("b:1", models=(), resources=res(cpu_percent=0.0)),
        ep("c:1", status="unknown"),
        ep("d:1", resources=res(cpu_percent=90.0)),
    ]
    d = decide_route(task(), CFG, endpoints, 0, NOW)
    assert d is not None
    assert (d.selected_endpoint, d.candidate_count, ids(d)) == ("d:1", 1, ["d:1"])


# --- full decisions ------------------------------------------------------------------


OLLAMA_EP = ep("a:1", models=("mistral", "llama3"), resources=res(cpu_percent=20.0))
SCORED = (score_endpoint(OLLAMA_EP, None, WARM, NOW),)
ESCALATED = task(escalated_to="complex", fallback_reason="no_healthy_ollama_endpoints")
SIDECAR = {"effective_tier": "trivial", "target_type": "sidecar", "estimated_cost_tier": "free"}
CLAUDE = {"effective_tier": "complex", "target_type": "claude", "estimated_cost_tier": "api"}
FALLBACK = {
    "fallback_used": True,
    "fallback_from_tier": "standard",
    "fallback_reason": "no_healthy_ollama_endpoints",
}


@pytest.mark.parametrize(
    ("t", "position", "fields"),
    [
        (
            task(),
            42,
            {"selected_endpoint": "a:1", "selected_model": "llama3", "candidates": SCORED},
        ),
        (task("trivial"), 9, SIDECAR),
        (task("complex"), 9, CLAUDE),
        (ESCALATED, 5, CLAUDE | FALLBACK),
    ],
    ids=["ollama", "sidecar", "claude", "fallback"],
)
def test_decision_every_field(t: TaskRecord, position: int, fields: dict[str, object]) -> None:
    expected: dict[str, object] = {
        "effective_tier": "standard",
        "target_type": "ollama",
        "selected_endpoint": None,
        "selected_model": None,
        "fallback_used": False,
        "fallback_from_tier": None,
        "fallback_reason": None,
        "candidate_count": 1,
        "candidates": (),
        "classification_reason": REASON,
        "estimated_cost_tier": "local",
        "decided_at": NOW,
        "scoring_duration_us": 17,
        "endpoint_state_position": position,
    }
    d = decide_route(t, WARM, [OLLAMA_EP], position, NOW, scoring_duration_us=17)
    assert d == RoutingDecision(**(expected | fields))
    if d is not None and d.candidates:
        assert d.candidates[0].score == pytest.approx(0.8 * 1.0 * 0.9 * 1.15 * 1.0)


def test_non_escalated_task_ignores_stale_fallback_reason() -> None:
    d = decide_route(task(fallback_reason="old"), CFG, [ep()], 0, NOW)
    assert d is not None
    assert (d.fallback_used, d.fallback_from_tier, d.fallback_reason) == (False, None, None)


def test_escalated_to_standard_routes_ollama_with_fallback() -> None:
    t = task(route_tier="trivial", escalated_to="standard", fallback_reason="x")
    d = decide_route(t, CFG, [ep("a:1")], 1, NOW)
    assert d is not None
    assert (d.effective_tier, d.target_type, d.selected_endpoint) == ("standard", "ollama", "a:1")
    assert (d.fallback_used, d.fallback_from_tier, d.fallback_reason) == (True, "trivial", "x")
    assert d.estimated_cost_tier == "local"


def test_cost_tier_comes_from_ladder() -> None:
    ladder = (
        TierRule(tier="trivial", target="sidecar", cost_tier="free"),
        TierRule(tier="standard", target="claude", cost_tier="api"),
        TierRule(tier="complex", target="claude", cost_tier="premium"),
    )
    config = SchedulerConfig(ladder=ladder)
    d = decide_route(task(route_tier="complex"), config, [], 0, NOW)
    assert d is not None and d.estimated_cost_tier == "premium"
    d = decide_route(task(route_tier="standard"), config, [], 0, NOW)
    assert d is not None and (d.target_type, d.estimated_cost_tier) == ("claude", "api")


# --- no candidate --------------------------------------------------------------------

UNHEALTHY = [ep("a:1", status="unhealthy"), ep("b:1", models=()), ep("c:1", status="unknown")]
NO_CLAUDE = SchedulerConfig(claude_enabled=False)


@pytest.mark.parametrize(
    ("t", "config", "endpoints", "available"),
    [
        (task("trivial"), CFG, [], True),
        (task("trivial"), NO_CLAUDE, [], True),
        (task("standard"), CFG, [], False),
        (task("standard"), CFG, UNHEALTHY, False),
        (task("standard"), CFG, [*UNHEALTHY, ep("d:1")], True),
        (task("standard"), NO_CLAUDE, [ep("d:1")], True),
        (task("complex"), CFG, [], True),
        (task("complex"), NO_CLAUDE, [ep("d:1")], False),
        (task("standard", escalated_to="complex"), NO_CLAUDE, [ep("d:1")], False),
        (task("trivial", escalated_to="standard"), CFG, UNHEALTHY, False),
    ],
)
def test_has_candidate_agrees_with_decide_route(
    t: TaskRecord, config: SchedulerConfig, endpoints: list[EndpointRecord], available: bool
) -> None:
    assert has_candidate(t.effective_tier, config, endpoints) is available
    assert (decide_route(t, config, endpoints, 0, NOW) is not None) is available


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("ollama", "no_healthy_ollama_endpoints"),
        ("claude", "claude_disabled"),
        ("sidecar", "no_sidecar_candidates"),
    ],
)
def test_fallback_reason_for(target: str, reason: str) -> None:
    assert fallback_reason_for(target) == reason


# --- configuration -------------------------------------------------------------------


def test_config_defaults_follow_spec() -> None:
    c = SchedulerConfig()
    assert (c.fallback_wait_s, c.lease_s, c.task_ttl_s, c.resource_stale_s) == (5, 300, 600, 90)
    assert (c.default_model, c.claude_enabled, c.health_failures_to_unhealthy) == (None, True, 2)
    assert [(r.tier, r.target, r.cost_tier) for r in c.ladder] == [
        ("trivial", "sidecar", "free"),
        ("standard", "ollama", "local"),
        ("complex", "claude", "api"),
    ]
    assert c.ladder == DEFAULT_LADDER


@pytest.mark.parametrize(
    ("tier", "above"), [("trivial", "standard"), ("standard", "complex"), ("complex", None)]
)
def test_tier_above(tier: str, above: str | None) -> None:
    assert SchedulerConfig().tier_above(tier) == above


def test_tier_above_short_ladder() -> None:
    config = SchedulerConfig(ladder=DEFAULT_LADDER[:2])
    assert (config.tier_above("trivial"), config.tier_above("standard")) == ("standard", None)
    assert config.tier_above("complex") is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"lease_s": 0}, "lease_s"),
        ({"lease_s": -1.0}, "lease_s"),
        ({"fallback_wait_s": 0}, "fallback_wait_s"),
        ({"task_ttl_s": -5}, "task_ttl_s"),
        ({"resource_stale_s": 0}, "resource_stale_s"),
        ({"health_failures_to_unhealthy": 0}, "health_failures_to_unhealthy"),
        ({"ladder": ()}, "ladder"),
        ({"ladder": (DEFAULT_LADDER[0], DEFAULT_LADDER[0])}, "ladder"),
    ],
)
def test_invalid_config_raises_validation_error(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        SchedulerConfig(**kwargs)
    assert info.value.field == field
    assert info.value.code == "validation_error"
