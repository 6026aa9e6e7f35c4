"""The configuration ``whatif --config FILE`` replays under.

By default FILE is an overlay: the scheduler keys it names (and any ``TIERLOG_*``
variable of a scheduler key, as everywhere else) change, every other key stays as the
log recorded it at each moment. ``--replace`` takes the whole configuration from the
settings instead: keys FILE leaves out are the built-in defaults.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from typing import Any

import msgspec

from tierlog.adapters.settings import Settings, env_name
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.errors import ConfigurationError, ValidationError

POLICY_KEYS = frozenset(f.name for f in msgspec.structs.fields(SchedulerConfig))
"""Every key of the scheduler's policy (``SchedulerConfig``)."""


@dataclass(frozen=True)
class Overlay:
    """Scheduler keys to change, with their new values; the rest stay as recorded."""

    changes: dict[str, Any]

    def __call__(self, recorded: SchedulerConfig) -> SchedulerConfig:
        """``recorded`` with the named keys changed."""
        try:
            return msgspec.structs.replace(recorded, **self.changes)
        except ValidationError as exc:  # a combination SchedulerConfig refuses
            raise ConfigurationError(
                f"invalid setting {exc.field} over the recorded configuration: {exc.message}",
                field=exc.field,
            ) from None

    @property
    def keys(self) -> list[str]:
        """The keys it changes, sorted."""
        return sorted(self.changes)


def named_keys(settings: Settings) -> frozenset[str]:
    """The scheduler keys the configuration file or a ``TIERLOG_*`` variable names.

    The file was already read (and its unknown keys refused) by ``Settings``; it is read
    again only for the names of its keys.
    """
    named = {key for key in POLICY_KEYS if os.environ.get(env_name(key)) is not None}
    if settings.config is not None:
        try:
            document = tomllib.loads(settings.config.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            path = settings.config
            raise ConfigurationError(f"cannot read config {path}: {exc}", field="config") from exc
        named |= POLICY_KEYS & document.keys()
    return frozenset(named)


def overlay_of(settings: Settings) -> Overlay:
    """The overlay the settings name: their value of each named scheduler key."""
    policy = settings.scheduler
    return Overlay({key: getattr(policy, key) for key in sorted(named_keys(settings))})
