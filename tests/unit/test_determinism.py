"""Recorded routing decisions are recomputed from the recorded inputs."""

from __future__ import annotations

from msgspec.structs import replace

from tierlog.domain import commands as cmd
from tierlog.domain import events as ev
from tierlog.domain.clock import VirtualClock
from tierlog.domain.commands import COMMANDS
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.replay.determinism import DeterminismChecker
from tierlog.domain.service import SchedulerService
from tierlog.domain.state import SchedulerState
from tierlog.domain.unit_of_work import UnitOfWork

CONFIG = SchedulerConfig(default_model="qwen", fallback_wait_s=5)
FINAL = ("completed", "cancelled")


def _recorded_log() -> list[ev.DomainEvent]:
    svc, clock = SchedulerService(CONFIG), VirtualClock()
    log: list[ev.DomainEvent] = []

    def run(name: str | None = None, **kw: object) -> None:
        with UnitOfWork(svc.state) as uow:
            if name:
                svc.handle(COMMANDS[name](**kw), uow, clock.now())
            svc.schedule(uow, clock.now())
            uow.commit()
        log.extend(uow.events)

    run("record_configuration")
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


def _fed(events: list[ev.DomainEvent], **kw: object) -> DeterminismChecker:
    checker = DeterminismChecker(**kw)  # type: ignore[arg-type]
    for position, event in enumerate(events, 1):
        assert checker.check(position, event) == []
    return checker


def test_the_routing_inputs_kept_per_task_are_the_task_records_fields():
    events = _recorded_log()
    checker = _fed(events)
    state = SchedulerState()
    for position, event in enumerate(events, 1):
        state.apply(event, position)
    live = {t.task_id.hex: t for t in state.tasks.values() if t.state not in FINAL}
    assert set(checker.tasks) == set(live) and live
    for key, inputs in checker.tasks.items():
        task = live[key]
        for name in ("repo", "route_tier", "classification_reason", "escalated_to"):
            assert getattr(inputs, name) == getattr(task, name)
        assert (inputs.fallback_reason, inputs.effective_tier) == (
            task.fallback_reason,
            task.effective_tier,
        )


def test_finished_tasks_are_dropped_and_a_later_decision_for_one_is_reported():
    svc, clock = SchedulerService(CONFIG), VirtualClock()
    events: list[ev.DomainEvent] = []
    now = clock.now()
    with UnitOfWork(svc.state) as uow:
        svc.handle(cmd.RecordConfiguration(), uow, now)
        svc.handle(cmd.RegisterAgent(agent_id="a0"), uow, now)
        task = svc.handle(
            cmd.SubmitTask(description="fix typo", complexity_tier="trivial"), uow, now
        )
        svc.schedule(uow, now)
        svc.handle(cmd.CompleteTask(agent_id="a0", task_id=task.task_id, generation=1), uow, now)
        uow.commit()
    events.extend(uow.events)
    checker = _fed(events)
    assert checker.tasks == {}
    routed = next(e for e in events if isinstance(e, ev.TaskRouted))
    late = replace(routed, originator_version=events[-1].originator_version + 1)
    found = checker.check(len(events) + 1, late)
    assert [v.rule for v in found] == ["decision_deterministic"]
    assert "task the log does not hold" in found[0].detail


def test_only_endpoint_states_a_decision_can_still_cite_are_kept():
    events = _recorded_log()
    changes = [
        p
        for p, e in enumerate(events, 1)
        if type(e).__name__.startswith("Endpoint")  # every endpoint event changes it
    ]
    # No window: only the current endpoint state, and the recorded log still checks.
    assert list(_fed(events, endpoint_window=0).endpoints_at) == [changes[-1]]
    # A window of 3 positions keeps the states replaced within 3 of the last change.
    kept = list(_fed(events, endpoint_window=3).endpoints_at)
    successors = dict(zip(changes, [*changes[1:], None], strict=True))
    assert kept == [p for p in changes if successors[p] is None or successors[p] > changes[-1] - 3]
    # The default keeps them all here (the log is short), as before.
    assert list(_fed(events).endpoints_at) == [0, *changes]


def test_a_decision_citing_an_endpoint_state_outside_the_window_is_reported():
    events = _recorded_log()
    index = next(
        i
        for i, e in enumerate(events)
        if isinstance(e, ev.TaskRouted) and e.decision.target_type == "ollama"
    )
    checker = DeterminismChecker(endpoint_window=0)
    cited = events[index].decision.endpoint_state_position  # type: ignore[attr-defined]
    older = max(p for p in range(1, cited) if type(events[p - 1]).__name__.startswith("End"))
    events[index] = replace(
        events[index],
        decision=replace(events[index].decision, endpoint_state_position=older),  # type: ignore[attr-defined]
    )
    found = [v for p, e in enumerate(events, 1) for v in checker.check(p, e)]
    assert [v.rule for v in found] == ["decision_deterministic"]
    assert "more than 0 positions before the latest" in found[0].detail
