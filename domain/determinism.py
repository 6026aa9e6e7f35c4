"""The determinism check: every recorded routing decision equals the one the routing
policy recomputes from the recorded inputs (configuration, endpoint state, task)."""

from __future__ import annotations

from msgspec.structs import replace

from domain import events as ev
from domain.config import SchedulerConfig
from domain.invariants import Violation
from domain.records import EndpointRecord
from domain.routing import decide_route
from domain.state import SchedulerState


class DeterminismChecker:
    """Folds the log and recomputes each ``TaskRouted`` decision as it comes."""

    def __init__(self) -> None:
        self.state = SchedulerState()
        self.configs: dict[int, SchedulerConfig] = {0: SchedulerConfig()}
        self.endpoints_at: dict[int, tuple[EndpointRecord, ...]] = {0: ()}

    def check(self, position: int, event: ev.DomainEvent) -> list[Violation]:
        """Violations at ``event`` (recomputed before it is folded in), then fold it."""
        found: list[Violation] = []
        if isinstance(event, ev.TaskRouted):
            found.extend(self._recompute(position, event))
        self.state.apply(event, position)
        if isinstance(event, ev.SchedulerConfigured):
            self.configs[position] = event.config
        elif self.state.endpoint_state_position == position:
            self.endpoints_at[position] = tuple(self.state.endpoints.values())
        return found

    def _recompute(self, position: int, event: ev.TaskRouted) -> list[Violation]:
        recorded = event.decision
        config = self.configs.get(recorded.config_position)
        endpoints = self.endpoints_at.get(recorded.endpoint_state_position)
        task = self.state.tasks.get(event.originator_id)
        where = str(event.originator_id)
        if config is None or endpoints is None or task is None:
            missing = (
                "configuration"
                if config is None
                else "endpoint state"
                if endpoints is None
                else "task"
            )
            return [
                Violation(
                    position,
                    where,
                    "decision_deterministic",
                    f"the decision cites a {missing} the log does not hold",
                )
            ]
        again = decide_route(
            task,
            config,
            endpoints,
            recorded.endpoint_state_position,
            recorded.decided_at,
            config_position=recorded.config_position,
        )
        expected = replace(recorded, scoring_duration_us=0)
        if again is None or again != expected:
            return [
                Violation(
                    position,
                    where,
                    "decision_deterministic",
                    f"recorded {expected!r} but the policy gives {again!r}",
                )
            ]
        return []
