"""The replay checkers' folded state as data, so an audit can start where the last
clean one stopped (the incremental audit, issue #16).

Each checker's state is a msgspec struct holding exactly what the checker keeps, and
:func:`dump_checkers` / :func:`load_checkers` turn a pair of checkers into bytes and
back (MessagePack). A restored checker continues as if it had folded the log itself:
the same maps, the same forgetting order, the same endpoint snapshots. The determinism
checker's endpoint fold is a ``SchedulerState``, kept in the time-travel checkpoint
format (``domain.snapshot``).

``CHECKERS_VERSION`` names what the checkers check and keep: raise it whenever a rule is
added or a checker keeps something new, so a state folded by an older release (which
never checked the new rule over its prefix) is not resumed from.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime

import msgspec

from tierlog.domain.aggregates.endpoint import EndpointRecord
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.replay.determinism import DeterminismChecker, RouteInputs
from tierlog.domain.replay.invariants import InvariantChecker, TaskFacts, Violation
from tierlog.domain.snapshot import dump_state, load_state

CHECKERS_VERSION = 1
"""The version of the checkers' rules and state; see the module's docstring."""


class InvariantsState(msgspec.Struct, kw_only=True, gc=False):
    """Everything an ``InvariantChecker`` keeps between events."""

    versions: dict[str, int]
    tasks: dict[str, TaskFacts]
    finished: dict[str, int]
    finish_order: list[str]
    remember_finished: int
    open_timers: dict[str, datetime]
    leader_epoch: int


class DeterminismState(msgspec.Struct, kw_only=True, gc=False):
    """Everything a ``DeterminismChecker`` keeps between events."""

    endpoint_window: int
    tasks: dict[str, RouteInputs]
    configs: dict[int, SchedulerConfig]
    endpoints_at: dict[int, list[EndpointRecord]]
    snapshot_order: list[int]
    endpoint_fold: bytes  # ``dump_state`` of the endpoint-only ``SchedulerState``


class CheckersState(msgspec.Struct, kw_only=True, gc=False):
    """Both checkers after ``position``, and the version of their rules."""

    version: int
    position: int
    invariants: InvariantsState
    determinism: DeterminismState


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(CheckersState)


def dump_checkers(
    position: int, invariants: InvariantChecker, determinism: DeterminismChecker
) -> bytes:
    """Both checkers' state after ``position``, as bytes."""
    return _encoder.encode(
        CheckersState(
            version=CHECKERS_VERSION,
            position=position,
            invariants=InvariantsState(
                versions=invariants.versions,
                tasks=invariants.tasks,
                finished=invariants.finished,
                finish_order=list(invariants._finish_order),
                remember_finished=invariants.remember_finished,
                open_timers=invariants.open_timers,
                leader_epoch=invariants.leader_epoch,
            ),
            determinism=DeterminismState(
                endpoint_window=determinism.endpoint_window,
                tasks=determinism.tasks,
                configs=determinism.configs,
                endpoints_at={k: list(v) for k, v in determinism.endpoints_at.items()},
                snapshot_order=list(determinism._snapshot_order),
                endpoint_fold=dump_state(determinism._endpoints),
            ),
        )
    )


class StaleCheckersError(ValueError):
    """A checkers' state written under other rules (``CHECKERS_VERSION``)."""


def load_checkers(
    data: bytes, sink: list[Violation]
) -> tuple[int, InvariantChecker, DeterminismChecker]:
    """The position and both checkers from ``dump_checkers`` bytes, reporting into
    ``sink``. Raises ``StaleCheckersError`` for another version's state, and msgspec's
    errors (or ``OlderFoldError``) for bytes that are not such a state."""
    state = _decoder.decode(data)
    if state.version != CHECKERS_VERSION:
        raise StaleCheckersError(f"checkers version {state.version}, not {CHECKERS_VERSION}")
    inv = state.invariants
    invariants = InvariantChecker(sink, remember_finished=inv.remember_finished)
    invariants.versions = inv.versions
    invariants.tasks = inv.tasks
    invariants.finished = inv.finished
    invariants._finish_order = deque(inv.finish_order)
    invariants.open_timers = inv.open_timers
    invariants.leader_epoch = inv.leader_epoch
    det = state.determinism
    determinism = DeterminismChecker(sink, endpoint_window=det.endpoint_window)
    determinism.tasks = det.tasks
    determinism.configs = det.configs
    determinism.endpoints_at = {k: tuple(v) for k, v in det.endpoints_at.items()}
    determinism._snapshot_order = deque(det.snapshot_order)
    determinism._endpoints = load_state(det.endpoint_fold)
    return state.position, invariants, determinism
