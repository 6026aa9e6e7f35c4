from __future__ import annotations

import os

import pytest

from tierlog.adapters.cli import main
from tierlog.adapters.settings import Settings, load_settings
from tierlog.domain.config import DEFAULT_LADDER, SchedulerConfig
from tierlog.domain.errors import ConfigurationError, TierlogError


@pytest.fixture(autouse=True)
def no_tierlog_environment(monkeypatch):
    """Each test sees only the TIERLOG_* variables it sets."""
    for name in list(os.environ):
        if name.startswith("TIERLOG_"):
            monkeypatch.delenv(name)


def test_defaults_follow_the_spec():
    config = Settings().scheduler
    assert (config.fallback_wait_s, config.lease_s, config.task_ttl_s) == (5.0, 300.0, 600.0)
    assert config.claude_enabled is True
    assert config.health_failures_to_unhealthy == 2
    assert config.resource_stale_s == 90.0
    assert config.default_model is None
    assert config.ladder == DEFAULT_LADDER


def test_process_defaults():
    settings = Settings()
    assert settings.store == "sqlite:///./tierlog.db"
    assert (settings.host, settings.port, settings.probe) == ("127.0.0.1", 8000, False)
    assert settings.admin_token is None
    assert (settings.max_batch, settings.read_batch, settings.projection_batch) == (
        1000,
        5000,
        10_000,
    )


def test_toml_file_then_environment_overrides(tmp_path, monkeypatch):
    path = tmp_path / "tierlog.toml"
    path.write_text(
        'fallback_wait_s = 2.5\ndefault_model = "llama3:8b"\nclaude_enabled = true\n'
        '[[ladder]]\ntier = "trivial"\ntarget = "sidecar"\ncost_tier = "free"\n'
        '[[ladder]]\ntier = "standard"\ntarget = "ollama"\ncost_tier = "local"\n'
    )
    monkeypatch.setenv("TIERLOG_CLAUDE_ENABLED", "false")
    monkeypatch.setenv("TIERLOG_LEASE_S", "30")
    config = Settings(config=path).scheduler
    assert config.fallback_wait_s == 2.5
    assert config.default_model == "llama3:8b"
    assert config.claude_enabled is False
    assert config.lease_s == 30.0
    assert [r.tier for r in config.ladder] == ["trivial", "standard"]
    assert config.tier_above("standard") is None


def test_flags_then_environment_then_file_then_defaults(tmp_path, monkeypatch):
    path = tmp_path / "tierlog.toml"
    path.write_text('port = 7001\nhost = "0.0.0.0"\nmax_batch = 10\nlease_s = 40\n')
    monkeypatch.setenv("TIERLOG_PORT", "7002")
    monkeypatch.setenv("TIERLOG_MAX_BATCH", "20")
    settings = load_settings(config=path, port=7003, host=None, store=None)
    assert settings.port == 7003  # the flag
    assert settings.max_batch == 20  # the environment over the file
    assert settings.host == "0.0.0.0"  # the file: the flag was not given
    assert settings.scheduler.lease_s == 40.0
    assert settings.read_batch == 5000  # the default
    assert settings.config == path


def test_an_explicit_policy_wins_over_every_policy_key(monkeypatch):
    monkeypatch.setenv("TIERLOG_LEASE_S", "30")
    policy = SchedulerConfig(lease_s=60.0)
    assert Settings(scheduler=policy).scheduler is policy


def test_the_config_file_is_chosen_by_flag_only(tmp_path, monkeypatch):
    path = tmp_path / "tierlog.toml"
    path.write_text("port = 7001\n")
    monkeypatch.setenv("TIERLOG_CONFIG", str(path))
    assert Settings().port == 8000


def test_the_admin_token_is_never_shown(monkeypatch):
    monkeypatch.setenv("TIERLOG_ADMIN_TOKEN", "hunter2-operator")
    settings = Settings()
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "hunter2-operator"
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert "hunter2" not in shown


@pytest.mark.parametrize(
    ("environ", "field"),
    [
        ({"TIERLOG_LEASE_S": "soon"}, "lease_s"),
        ({"TIERLOG_CLAUDE_ENABLED": "maybe"}, "claude_enabled"),
        ({"TIERLOG_FALLBACK_WAIT_S": "0"}, "fallback_wait_s"),
        ({"TIERLOG_HEALTH_FAILURES_TO_UNHEALTHY": "0"}, "health_failures_to_unhealthy"),
        ({"TIERLOG_LADDER": "not json"}, "ladder"),
        ({"TIERLOG_LADDER": '[{"tier": "epic", "target": "x", "cost_tier": "y"}]'}, "ladder"),
        ({"TIERLOG_PORT": "eighty"}, "port"),
        ({"TIERLOG_PORT": "70000"}, "port"),
        ({"TIERLOG_MAX_BATCH": "0"}, "max_batch"),
        ({"TIERLOG_WRITER_POLL_S": "-1"}, "writer_poll_s"),
        ({"TIERLOG_PROBE": "sometimes"}, "probe"),
    ],
)
def test_bad_environment_values_are_clear_errors(monkeypatch, environ, field):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        Settings()
    assert info.value.field == field
    assert field in info.value.message.lower()  # the key, or its TIERLOG_ variable
    assert isinstance(info.value, TierlogError)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("lease_s = -1\n", "lease_s"),
        ("surprise = 1\n", "surprise"),
        ("lease_s = \n", "config"),
        ('lease_s = "long"\n', "lease_s"),
        ("config = 'other.toml'\n", "config"),
        ("[scheduler]\nlease_s = 1\n", "scheduler"),
        ('port = "high"\n', "port"),
    ],
)
def test_bad_config_files_are_clear_errors(tmp_path, text, field):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as info:
        Settings(config=path)
    assert info.value.field == field


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot read config"):
        Settings(config=tmp_path / "absent.toml")


def test_the_cli_reports_a_bad_setting_and_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TIERLOG_READ_BATCH", "lots")
    store = f"sqlite:///{tmp_path / 'never.db'}"
    assert main(["at", "--position", "1", "--store", store]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tierlog: ") and "read_batch" in err
    assert not (tmp_path / "never.db").exists()  # refused before the store was opened


def test_the_limits_come_from_the_environment_and_the_file(monkeypatch, tmp_path):
    from tierlog.domain.limits import CommandLimits

    monkeypatch.setenv("TIERLOG_MAX_BODY_BYTES", "65536")
    monkeypatch.setenv("TIERLOG_MAX_RESULT_BYTES", "1000")
    config = tmp_path / "tierlog.toml"
    config.write_text("max_json_depth = 8\nmax_list_items = 50\n")
    settings = Settings(config=config)
    assert settings.max_body_bytes == 65536
    assert settings.command_limits() == CommandLimits(
        max_json_depth=8, max_list_items=50, max_result_bytes=1000
    )
    assert Settings().max_body_bytes == 65536 and Settings().max_json_depth == 32


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TIERLOG_MAX_BODY_BYTES", "10"),
        ("TIERLOG_MAX_JSON_DEPTH", "65"),
        ("TIERLOG_MAX_METADATA_BYTES", "0"),
        ("TIERLOG_MAX_STRING_CHARS", "lots"),
        ("TIERLOG_HEALTH_FAILURES_TO_UNHEALTHY", "1" + "0" * 30),
    ],
)
def test_a_limit_out_of_range_names_its_key(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    key = variable.removeprefix("TIERLOG_").lower()
    with pytest.raises(ConfigurationError) as info:
        Settings()
    assert info.value.field == key
