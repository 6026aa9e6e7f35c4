"""whatif on a crafted log: the recorded configuration changes nothing; each changed
setting changes exactly the tasks it should."""

from __future__ import annotations

import pytest
from msgspec.structs import replace
from wiring import runtime_on

from tierlog.adapters.history.time_travel import what_if
from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import commands as cmd
from tierlog.domain.clock import VirtualClock
from tierlog.domain.config import SchedulerConfig

RECORDED = SchedulerConfig(default_model="llama3", fallback_wait_s=5.0)


def _crafted(url: str) -> dict[str, str]:
    clock = VirtualClock()
    rt = runtime_on(url, RECORDED, clock)
    ep = rt.execute(cmd.RegisterEndpoint(host="gpu-a", models=["llama3", "qwen"]))

    def health(ok: bool) -> None:
        rt.execute(cmd.ReportHealth(endpoint_id=ep, ok=ok))

    def submit(text: str, tier: str) -> str:
        return str(rt.execute(cmd.SubmitTask(description=text, complexity_tier=tier)).task_id)

    def finish(task: str) -> None:
        t = rt.state.tasks[next(k for k in rt.state.tasks if str(k) == task)]
        rt.execute(
            cmd.CompleteTask(agent_id=t.assigned_to, task_id=t.task_id, generation=t.generation)
        )

    health(True)
    rt.execute(cmd.RegisterAgent(agent_id="a1"))
    tasks = {"S1": submit("add tests for the parser", "standard")}
    finish(tasks["S1"])
    health(False), health(False)  # gpu-a unhealthy
    tasks["S2"] = submit("document the cursor parameter", "standard")  # waits, timer starts
    clock.advance(3)
    health(True)  # recovers inside the 5 s wait: S2 goes to ollama
    finish(tasks["S2"])
    health(False), health(False)
    tasks["S3"] = submit("write the release notes", "standard")
    clock.advance(5)
    rt.tick()  # fires: S3 falls back to claude
    finish(tasks["S3"])
    clock.advance(5)
    health(True)  # 10 s after S3's timer started
    tasks["C1"] = submit("refactor the storage layer", "complex")
    finish(tasks["C1"])
    rt.log.close()
    return tasks


@pytest.fixture
def crafted(new_store):
    url = new_store()
    return url, _crafted(url)


def _changes(url: str, config: SchedulerConfig) -> dict[str, set[str]]:
    log = EventLog(url)
    try:
        report = what_if(log, config)
    finally:
        log.close()
    return {task: set(change) for task, change in report["changes"].items()}


def test_the_recorded_configuration_changes_nothing(crafted):
    url, _ = crafted
    assert _changes(url, RECORDED) == {}


def test_a_new_default_model_changes_the_ollama_models(crafted):
    url, t = crafted
    assert _changes(url, replace(RECORDED, default_model="qwen")) == {
        t["S1"]: {"model"},
        t["S2"]: {"model"},
    }


def test_a_shorter_wait_escalates_the_task_that_recovered_in_time(crafted):
    url, t = crafted
    everything = {"tier", "target", "endpoint", "model", "cost_tier", "timer"}
    assert _changes(url, replace(RECORDED, fallback_wait_s=2.0)) == {t["S2"]: everything}


def test_a_longer_wait_keeps_the_escalated_task_at_its_tier(crafted):
    url, t = crafted
    everything = {"tier", "target", "endpoint", "model", "cost_tier", "timer"}
    assert _changes(url, replace(RECORDED, fallback_wait_s=15.0)) == {t["S3"]: everything}


def test_claude_disabled_leaves_complex_work_without_a_target(crafted):
    url, t = crafted
    assert _changes(url, replace(RECORDED, claude_enabled=False)) == {
        t["S3"]: {"target", "cost_tier"},
        t["C1"]: {"target", "cost_tier"},
    }


def test_finished_tasks_are_compared_and_forgotten_as_the_log_streams(crafted):
    """Memory follows the live tasks: once a task has finished and its virtual timer is
    decided, its outcome is compared and nothing of it is kept."""
    from tierlog.domain.replay.whatif import WhatIf

    url, t = crafted
    log = EventLog(url)
    replay = WhatIf(replace(RECORDED, fallback_wait_s=15.0))
    for position, event in log.iter_events():
        replay.feed(position, event)
    log.close()
    # Every task of the crafted log completed, and S3's longer timer ended when its
    # tier recovered, after S3 had completed: all compared before the report.
    assert replay.recorded == {} and replay.finished == {} and replay.pending == {}
    assert replay.state.tasks == {} and replay.decisions == {}
    assert set(replay.result.changes) == {t["S3"]}
    assert replay.report().tasks_seen == 4


def test_a_task_cancelled_while_it_waited_keeps_its_recorded_timer(new_store):
    """The cancellation and its timer's cancellation are two events of one command: the
    task is compared after both, so its recorded timer reads "cancelled"."""
    url = new_store()
    clock = VirtualClock()
    rt = runtime_on(url, RECORDED, clock)
    ep = rt.execute(cmd.RegisterEndpoint(host="gpu-a", models=["llama3"]))
    for _ in range(2):
        rt.execute(cmd.ReportHealth(endpoint_id=ep, ok=False))
    rt.execute(cmd.RegisterAgent(agent_id="a1"))
    task = rt.execute(cmd.SubmitTask(description="document it", complexity_tier="standard")).task_id
    clock.advance(3)
    rt.execute(cmd.CancelTask(task_id=task))
    rt.log.close()
    assert _changes(url, RECORDED) == {}
    log = EventLog(url)
    report = what_if(log, replace(RECORDED, fallback_wait_s=1.0))
    log.close()
    assert report["changes"] == {str(task): {"timer": {"recorded": "cancelled", "would": "fired"}}}
