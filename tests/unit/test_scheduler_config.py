"""A configuration that could not be recorded and read back is refused before anything runs."""

from __future__ import annotations

import math

import msgspec
import pytest

from tierlog.domain.config import SchedulerConfig
from tierlog.domain.errors import ValidationError

SECONDS = ("fallback_wait_s", "lease_s", "task_ttl_s", "resource_stale_s")


@pytest.mark.parametrize("name", SECONDS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, float("1e400"), 1e12, 0, -1])
def test_waits_must_be_finite_positive_and_bounded(name: str, value: float) -> None:
    with pytest.raises(ValidationError) as refused:
        SchedulerConfig(**{name: value})
    assert refused.value.field == name
    assert name in refused.value.message


def test_a_valid_configuration_survives_the_log_unchanged() -> None:
    config = SchedulerConfig(lease_s=30.5, fallback_wait_s=0.25, task_ttl_s=3600)
    assert msgspec.json.decode(msgspec.json.encode(config), type=SchedulerConfig) == config
