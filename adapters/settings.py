"""Configuration from a TOML file, each key overridable by ``TIERLOG_<KEY>``."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from tierlog.domain.config import SchedulerConfig
from tierlog.domain.errors import ValidationError

_SCALAR_KEYS = {
    "fallback_wait_s": float,
    "lease_s": float,
    "task_ttl_s": float,
    "default_model": str,
    "claude_enabled": bool,
    "health_failures_to_unhealthy": int,
    "resource_stale_s": float,
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _from_env(key: str, kind: type, raw: str) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise ValidationError(f"TIERLOG_{key.upper()} must be true or false", field=key)
    if kind is str:
        return raw or None
    try:
        return kind(raw)
    except ValueError:
        raise ValidationError(
            f"TIERLOG_{key.upper()} must be a {kind.__name__}", field=key
        ) from None


def load_config(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> SchedulerConfig:
    """Read the TOML file (if any), then apply ``TIERLOG_*`` overrides, then validate.

    The ladder is a TOML array of tables ``[[ladder]]`` with ``tier``, ``target`` and
    ``cost_tier``; ``TIERLOG_LADDER`` takes the same as JSON.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValidationError(f"cannot read config {path}: {exc}", field="config") from exc
        unknown = set(values) - set(_SCALAR_KEYS) - {"ladder"}
        if unknown:
            raise ValidationError(
                f"unknown config keys: {', '.join(sorted(unknown))}", field="config"
            )
    for key, kind in _SCALAR_KEYS.items():
        raw = env.get(f"TIERLOG_{key.upper()}")
        if raw is not None:
            values[key] = _from_env(key, kind, raw)
    if "TIERLOG_LADDER" in env:
        try:
            values["ladder"] = msgspec.json.decode(env["TIERLOG_LADDER"])
        except msgspec.DecodeError as exc:
            raise ValidationError(f"TIERLOG_LADDER is not JSON: {exc}", field="ladder") from exc
    try:
        return msgspec.convert(values, SchedulerConfig)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"invalid configuration: {exc}", field="config") from exc
