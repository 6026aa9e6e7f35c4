from __future__ import annotations

import pytest

from tierlog.adapters.settings import load_config
from tierlog.domain.config import DEFAULT_LADDER
from tierlog.domain.errors import ValidationError


def test_defaults_follow_the_spec():
    config = load_config(environ={})
    assert (config.fallback_wait_s, config.lease_s, config.task_ttl_s) == (5.0, 300.0, 600.0)
    assert config.claude_enabled is True
    assert config.health_failures_to_unhealthy == 2
    assert config.resource_stale_s == 90.0
    assert config.default_model is None
    assert config.ladder == DEFAULT_LADDER


def test_toml_file_then_environment_overrides(tmp_path):
    path = tmp_path / "tierlog.toml"
    path.write_text(
        'fallback_wait_s = 2.5\ndefault_model = "llama3:8b"\nclaude_enabled = true\n'
        '[[ladder]]\ntier = "trivial"\ntarget = "sidecar"\ncost_tier = "free"\n'
        '[[ladder]]\ntier = "standard"\ntarget = "ollama"\ncost_tier = "local"\n'
    )
    config = load_config(path, environ={"TIERLOG_CLAUDE_ENABLED": "false", "TIERLOG_LEASE_S": "30"})
    assert config.fallback_wait_s == 2.5
    assert config.default_model == "llama3:8b"
    assert config.claude_enabled is False
    assert config.lease_s == 30.0
    assert [r.tier for r in config.ladder] == ["trivial", "standard"]
    assert config.tier_above("standard") is None


@pytest.mark.parametrize(
    ("environ", "field"),
    [
        ({"TIERLOG_LEASE_S": "soon"}, "lease_s"),
        ({"TIERLOG_CLAUDE_ENABLED": "maybe"}, "claude_enabled"),
        ({"TIERLOG_FALLBACK_WAIT_S": "0"}, "fallback_wait_s"),
        ({"TIERLOG_HEALTH_FAILURES_TO_UNHEALTHY": "0"}, "health_failures_to_unhealthy"),
        ({"TIERLOG_LADDER": "not json"}, "ladder"),
        ({"TIERLOG_LADDER": '[{"tier": "epic", "target": "x", "cost_tier": "y"}]'}, "config"),
    ],
)
def test_bad_environment_values_are_clear_errors(environ, field):
    with pytest.raises(ValidationError) as info:
        load_config(environ=environ)
    assert info.value.field == field


@pytest.mark.parametrize(
    "text", ["lease_s = -1\n", "surprise = 1\n", "lease_s = \n", 'lease_s = "long"\n']
)
def test_bad_config_files_are_clear_errors(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValidationError):
        load_config(path, environ={})


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValidationError, match="cannot read config"):
        load_config(tmp_path / "absent.toml", environ={})
