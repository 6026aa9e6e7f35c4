"""``whatif --config FILE`` overlays FILE on the recorded configuration: only the keys
FILE names change, the rest follow what the log recorded at each moment; ``--replace``
takes FILE's configuration whole (keys it leaves out are the built-in defaults)."""

from __future__ import annotations

import json

import pytest
from msgspec.structs import replace
from wiring import runtime_on

from tierlog.adapters.cli import main
from tierlog.adapters.history.time_travel import what_if
from tierlog.adapters.history.whatif_config import Overlay, named_keys, overlay_of
from tierlog.adapters.settings import Settings
from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import commands as cmd
from tierlog.domain.clock import VirtualClock
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.errors import ConfigurationError

FIRST = SchedulerConfig(default_model="llama3", fallback_wait_s=5.0)
SECOND = replace(FIRST, default_model="qwen")


def _run_once(
    url: str, config: SchedulerConfig, clock: VirtualClock, texts: list[str]
) -> list[str]:
    """One run of the scheduler under ``config``: a healthy endpoint serving both models,
    one agent, and each text submitted as standard work and completed."""
    rt = runtime_on(url, config, clock)
    ep = rt.execute(cmd.RegisterEndpoint(host="gpu-a", models=["llama3", "qwen"]))
    rt.execute(cmd.ReportHealth(endpoint_id=ep, ok=True))
    rt.execute(cmd.RegisterAgent(agent_id="a1"))
    ids = []
    for text in texts:
        task = rt.execute(cmd.SubmitTask(description=text, complexity_tier="standard")).task_id
        held = rt.state.tasks[task]
        rt.execute(
            cmd.CompleteTask(agent_id="a1", task_id=task, generation=held.generation, result=None)
        )
        ids.append(str(task))
        clock.advance(1)
    rt.log.close()
    return ids


@pytest.fixture
def two_configs(sqlite_url: str) -> tuple[str, str, str]:
    """A log recorded under FIRST (task one), then, after a restart, under SECOND
    (task two): each routed to the model its configuration preferred."""
    clock = VirtualClock()
    (one,) = _run_once(sqlite_url, FIRST, clock, ["add tests for the parser"])
    (two,) = _run_once(sqlite_url, SECOND, clock, ["document the cursor parameter"])
    return sqlite_url, one, two


def _changes(url: str, config: SchedulerConfig, overlay: Overlay | None = None) -> dict[str, dict]:
    log = EventLog(url)
    try:
        report = what_if(log, config, overlay=overlay)
    finally:
        log.close()
    changes: dict[str, dict] = report["changes"]
    return changes


def test_an_empty_overlay_changes_nothing_across_two_recorded_configurations(two_configs):
    url, _, _ = two_configs
    nothing = Overlay({})
    assert _changes(url, nothing(SchedulerConfig()), nothing) == {}


def test_replacing_with_the_last_configuration_changes_the_tasks_before_it(two_configs):
    url, one, _ = two_configs
    assert _changes(url, SECOND) == {one: {"model": {"recorded": "llama3", "would": "qwen"}}}


def test_an_overlay_changes_only_its_keys_over_each_recorded_configuration(two_configs):
    url, one, two = two_configs
    # Claude off: nothing standard changes, as both tasks found Ollama; default_model
    # stays llama3 for task one and qwen for task two, as recorded.
    no_claude = Overlay({"claude_enabled": False})
    assert _changes(url, no_claude(SchedulerConfig()), no_claude) == {}
    # default_model named: task two (recorded with qwen) changes, task one does not.
    llama = Overlay({"default_model": "llama3"})
    assert _changes(url, llama(SchedulerConfig()), llama) == {
        two: {"model": {"recorded": "qwen", "would": "llama3"}}
    }
    assert one not in _changes(url, llama(SchedulerConfig()), llama)


def test_the_overlay_names_the_files_scheduler_keys_and_takes_their_values(tmp_path, monkeypatch):
    monkeypatch.delenv("TIERLOG_DEFAULT_MODEL", raising=False)
    path = tmp_path / "new.toml"
    path.write_text("fallback_wait_s = 2.0\nport = 9000\n")  # port is no scheduler key
    settings = Settings(config=path)
    assert named_keys(settings) == {"fallback_wait_s"}
    overlay = overlay_of(settings)
    assert overlay.changes == {"fallback_wait_s": 2.0}
    assert overlay(FIRST) == replace(FIRST, fallback_wait_s=2.0)  # default_model kept
    monkeypatch.setenv("TIERLOG_DEFAULT_MODEL", "qwen")
    settings = Settings(config=path)
    assert overlay_of(settings).changes == {"fallback_wait_s": 2.0, "default_model": "qwen"}


def test_unknown_keys_in_the_file_are_refused_by_name(tmp_path):
    path = tmp_path / "new.toml"
    path.write_text("fallback_wait_s = 2.0\nfalback_wait_s = 3.0\n")
    with pytest.raises(ConfigurationError, match=r"unknown keys in .*: falback_wait_s"):
        Settings(config=path)


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_overlays_by_default_and_replaces_when_told(two_configs, tmp_path, capsys):
    url, one, two = two_configs
    path = tmp_path / "new.toml"
    path.write_text('default_model = "llama3"\n')
    code, out, _ = _cli(capsys, "whatif", "--json", "--config", str(path), "--store", url)
    assert code == 0
    report = json.loads(out)
    assert report["configuration"] == {"mode": "overlay", "changed": ["default_model"]}
    assert set(report["changes"]) == {two}
    # Replaced: the one configuration for the whole log, so the same here.
    code, out, _ = _cli(
        capsys, "whatif", "--json", "--replace", "--config", str(path), "--store", url
    )
    assert code == 0
    report = json.loads(out)
    assert report["configuration"] == {"mode": "replace"}
    assert set(report["changes"]) == {two}
    path.write_text("lease_s = 30.0\n")  # a key that changes no routing
    code, out, _ = _cli(capsys, "whatif", "--config", str(path), "--store", url)
    assert code == 0
    assert out.splitlines()[:2] == [
        "under the recorded configuration with these keys changed: lease_s",
        "0 of 2 tasks would change: nothing",
    ]
    code, out, _ = _cli(capsys, "whatif", "--replace", "--config", str(path), "--store", url)
    assert code == 0
    assert out.splitlines()[1] == "1 of 2 tasks would change: model=1"
    # No default_model in full: the endpoint's first model (llama3) for task two too.
    assert f"{two}: model qwen -> llama3" in out and one not in out


def test_the_cli_refuses_an_unknown_key_in_one_line(two_configs, tmp_path, capsys):
    url, _, _ = two_configs
    path = tmp_path / "new.toml"
    path.write_text("no_such_key = 1\n")
    code, out, err = _cli(capsys, "whatif", "--config", str(path), "--store", url)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"tierlog: unknown keys in {path}: no_such_key"]
