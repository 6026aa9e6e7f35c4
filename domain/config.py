"""Scheduler configuration: plain values, validated once, passed into pure decisions."""

from __future__ import annotations

import math
from typing import Literal

import msgspec

from tierlog.domain.errors import ValidationError

TierName = Literal["trivial", "standard", "complex"]
MAX_SECONDS = 10 * 365 * 24 * 3600.0
"""The longest wait, lease or TTL a configuration may set (ten years): a datetime plus
more than that overflows."""
TargetType = Literal["sidecar", "ollama", "claude"]
MAX_FAILURES = 1_000_000
"""The most consecutive failed health checks a configuration may wait for."""
MAX_POLICY_TEXT = 1_000
"""The longest model name or cost tier a configuration may set (characters)."""


def _check_text(value: str, field: str) -> None:
    # Recorded in the log and copied into read models: JSON and PostgreSQL text must
    # carry it (no NUL, no lone surrogate from an undecodable environment variable).
    if not value or len(value) > MAX_POLICY_TEXT:
        raise ValidationError(f"{field} must be 1 to {MAX_POLICY_TEXT} characters", field=field)
    if not value.isprintable():  # control characters, NUL, lone surrogates
        raise ValidationError(f"{field} must be printable text", field=field)


def check_backoff(value: float, field: str) -> None:
    """Refuse a retry backoff that is not a finite number of seconds from 0 to
    ``MAX_SECONDS`` (0: no wait)."""
    if not math.isfinite(value) or not 0 <= value <= MAX_SECONDS:
        raise ValidationError(
            f"{field} must be a finite number of seconds from 0 to {MAX_SECONDS:g}", field=field
        )


class TierRule(msgspec.Struct, frozen=True, kw_only=True):
    """One rung of the tier ladder: which target serves a tier, and at what cost."""

    tier: TierName
    target: TargetType
    cost_tier: str


DEFAULT_LADDER: tuple[TierRule, ...] = (
    TierRule(tier="trivial", target="sidecar", cost_tier="free"),
    TierRule(tier="standard", target="ollama", cost_tier="local"),
    TierRule(tier="complex", target="claude", cost_tier="api"),
)


class SchedulerConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Every tunable the domain reads. Defaults follow SPEC §1."""

    fallback_wait_s: float = 5.0
    lease_s: float = 300.0
    task_ttl_s: float = 600.0
    default_model: str | None = None
    claude_enabled: bool = True
    health_failures_to_unhealthy: int = 2
    resource_stale_s: float = 90.0
    ladder: tuple[TierRule, ...] = DEFAULT_LADDER
    # Retry backoff and agent liveness (issue #13): see ``domain/backoff.py`` and
    # ``domain/liveness.py``. A backoff of 0 retries at once.
    retry_backoff_s: float = 5.0
    retry_backoff_max_s: float = 300.0
    agent_idle_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        check_backoff(self.retry_backoff_s, "retry_backoff_s")
        check_backoff(self.retry_backoff_max_s, "retry_backoff_max_s")
        for name in (
            "fallback_wait_s",
            "lease_s",
            "task_ttl_s",
            "resource_stale_s",
            "agent_idle_timeout_s",
        ):
            value = getattr(self, name)
            # NaN and infinity would be recorded as null (JSON has neither) and brick
            # every later decode of the log: refuse them before anything is recorded.
            if not math.isfinite(value):
                raise ValidationError(f"{name} must be a finite number, not {value}", field=name)
            if value <= 0:
                raise ValidationError(f"{name} must be positive", field=name)
            if value > MAX_SECONDS:
                raise ValidationError(f"{name} must be at most {MAX_SECONDS:g} seconds", field=name)
        if not 1 <= self.health_failures_to_unhealthy <= MAX_FAILURES:
            raise ValidationError(
                f"health_failures_to_unhealthy must be from 1 to {MAX_FAILURES}",
                field="health_failures_to_unhealthy",
            )
        if self.default_model is not None:
            _check_text(self.default_model, "default_model")
        for rule in self.ladder:
            _check_text(rule.cost_tier, "ladder")
        tiers = [rule.tier for rule in self.ladder]
        if len(set(tiers)) != len(tiers) or not tiers:
            raise ValidationError("the tier ladder must name each tier once", field="ladder")

    def rule_for(self, tier: TierName) -> TierRule:
        """The ladder rung for ``tier``; a tier missing from the ladder routes as standard."""
        for rule in self.ladder:
            if rule.tier == tier:
                return rule
        for rule in self.ladder:
            if rule.tier == "standard":
                return rule
        return self.ladder[0]

    def tier_above(self, tier: TierName) -> TierName | None:
        """The next rung up the ladder, or None at the top."""
        order = [rule.tier for rule in self.ladder]
        index = order.index(tier) if tier in order else -1
        if index < 0 or index + 1 >= len(order):
            return None
        return order[index + 1]
