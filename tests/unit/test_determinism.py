"""Recorded routing decisions are recomputed from the recorded inputs."""

from __future__ import annotations

from msgspec.structs import replace

from domain import events as ev
from domain.clock import VirtualClock
from domain.config import SchedulerConfig
from domain.determinism import DeterminismChecker
from domain.service import SchedulerService
from domain.unit_of_work import UnitOfWork

CONFIG = SchedulerConfig(default_model="qwen", fallback_wait_s=5)


def _recorded_log() -> list[ev.DomainEvent]:
    svc, clock = SchedulerService(CONFIG), VirtualClock()
    log: list[ev.DomainEvent] = []

    def run(name: str | None = None, **kw: object) -> None:
        svc.state.begin()
        uow = UnitOfWork(svc.state)
        if name:
            getattr(svc, name)(uow, clock.now(), **kw)
        svc.schedule(uow, clock.now())
        svc.state.commit()
        log.extend(uow.events)

    run("record_config")
    for host, models in (("gpu-a", ["llama3"]), ("gpu-b", ["qwen", "llama3"])):
        run("register_endpoint", host=host, models=models)
        run("report_health", endpoint_id=f"{host}:11434", ok=True)
    run("report_resources", endpoint_id="gpu-a:11434", cpu_percent=10.0, repo="acme/web")
    for n in range(3):
        run("register_agent", agent_id=f"a{n}", ollama_host="gpu-b")
    run(
        "submit_task",
        description="add tests for the parser module",
        file_hints=["p.py"],
        repo="acme/web",
    )
    run("submit_task", description="refactor the storage layer")
    run("report_health", endpoint_id="gpu-a:11434", ok=False)
    run("report_health", endpoint_id="gpu-a:11434", ok=False)
    run("report_health", endpoint_id="gpu-b:11434", ok=False)
    run("report_health", endpoint_id="gpu-b:11434", ok=False)
    run("submit_task", description="write docs for the cursor parameter", file_hints=["d.md"])
    clock.advance(5)
    run()
    return log


def _check(events: list[ev.DomainEvent]) -> list[str]:
    checker = DeterminismChecker()
    return [v.rule for p, e in enumerate(events, 1) for v in checker.check(p, e)]


def test_recorded_decisions_recompute_exactly():
    events = _recorded_log()
    routed = [e for e in events if isinstance(e, ev.TaskRouted)]
    assert {e.decision.target_type for e in routed} == {"ollama", "claude"}
    assert any(e.decision.fallback_used for e in routed)
    assert all(e.decision.config_position == 1 for e in routed)
    assert _check(events) == []


def test_a_decision_that_the_policy_would_not_make_is_reported():
    events = _recorded_log()
    index = next(
        i
        for i, e in enumerate(events)
        if isinstance(e, ev.TaskRouted) and e.decision.target_type == "ollama"
    )
    forged = replace(
        events[index], decision=replace(events[index].decision, selected_model="mistral")
    )
    events[index] = forged
    assert _check(events) == ["decision_deterministic"]


def test_a_decision_citing_unrecorded_inputs_is_reported():
    events = _recorded_log()
    index = next(i for i, e in enumerate(events) if isinstance(e, ev.TaskRouted))
    events[index] = replace(
        events[index], decision=replace(events[index].decision, config_position=999)
    )
    assert _check(events) == ["decision_deterministic"]
