"""The determinism check: every recorded routing decision equals the one the routing
policy recomputes from the recorded inputs (configuration, endpoint state, task).

It keeps only what ``decide_route`` reads, not a whole ``SchedulerState``:

- per live task, its routing inputs (:class:`RouteInputs`); a task that completed or
  was cancelled can never be routed again, so it is dropped. A decision recorded for
  a task that is not tracked (never submitted, or already finished) is reported as
  citing a task the log does not hold;
- the configuration recorded at each ``SchedulerConfigured`` position (there are few);
- the endpoints in registration order, folded by ``SchedulerState``'s own endpoint
  handlers, and a snapshot of them at each position where they changed, but only
  while a decision can still cite it: the current one, and those that stopped being
  current less than ``endpoint_window`` positions before the latest change (a writer
  decides on the state it has caught up with, which may lag the log by what other
  writers appended meanwhile). A decision citing an older one is reported.
"""

from __future__ import annotations

from collections import deque

from msgspec import Struct
from msgspec.structs import replace

from tierlog.domain import events as ev
from tierlog.domain.aggregates.endpoint import EndpointRecord
from tierlog.domain.config import SchedulerConfig, TierName
from tierlog.domain.replay.invariants import Handler, SinkChecker, Violation
from tierlog.domain.routing import decide_route
from tierlog.domain.state import SchedulerState

# How many log positions an endpoint snapshot outlives the change that replaced it.
ENDPOINT_WINDOW = 10_000


class RouteInputs(Struct, gc=False):
    """What routing reads from one task (the fields of ``TaskRecord`` it uses)."""

    repo: str | None
    route_tier: TierName = "standard"
    classification_reason: str = ""
    escalated_to: TierName | None = None
    fallback_reason: str | None = None

    @property
    def effective_tier(self) -> TierName:
        """The tier the task routes at now: its own, or its fallback once escalated."""
        return self.escalated_to or self.route_tier


class DeterminismChecker(SinkChecker):
    """Folds the log and recomputes each ``TaskRouted`` decision as it comes.

    ``check(position, event)`` returns what one event breaks; the audit's fast path
    calls ``handlers.get(type(event))`` itself (None: nothing to do for that type) with
    the aggregate key (see ``domain.replay.invariants.aggregate_key``), appending to
    :attr:`violations`.
    """

    def __init__(
        self, sink: list[Violation] | None = None, endpoint_window: int = ENDPOINT_WINDOW
    ) -> None:
        self.violations: list[Violation] = sink if sink is not None else []
        self.endpoint_window = endpoint_window
        self.tasks: dict[str, RouteInputs] = {}  # live tasks only
        self.configs: dict[int, SchedulerConfig] = {0: SchedulerConfig()}
        self.endpoints_at: dict[int, tuple[EndpointRecord, ...]] = {0: ()}
        self._snapshot_order: deque[int] = deque([0])  # its keys, oldest first
        # Only endpoint events are applied to it: its endpoint fold is the live one.
        self._endpoints = SchedulerState()
        self.handlers: dict[type[ev.DomainEvent], Handler] = {
            ev.TaskSubmitted: self._submitted,
            ev.TaskClassified: self._classified,
            ev.TaskRouted: self._routed,
            ev.TaskEscalated: self._escalated,
            ev.TaskRetried: self._retried,
            ev.TaskDeescalated: self._retried,  # back at its own tier, like a retry
            ev.TaskCompleted: self._finished,
            ev.TaskCancelled: self._finished,
            ev.SchedulerConfigured: self._configured,
            ev.EndpointRegistered: self._endpoint_changed,
            ev.EndpointHealthReported: self._endpoint_changed,
            ev.EndpointResourcesReported: self._endpoint_changed,
            ev.EndpointDeregistered: self._endpoint_changed,
        }

    def feed(self, position: int, key: str, event: ev.DomainEvent) -> None:
        """Check and fold one event of the aggregate filed under ``key``."""
        handler = self.handlers.get(type(event))
        if handler is not None:
            handler(position, key, event)

    # --- tasks ------------------------------------------------------------------------

    def _submitted(self, _: int, key: str, e: ev.TaskSubmitted) -> None:
        self.tasks[key] = RouteInputs(repo=e.repo)

    def _classified(self, _: int, key: str, e: ev.TaskClassified) -> None:
        task = self.tasks.get(key)
        if task is not None:
            task.route_tier = e.route_tier
            task.classification_reason = e.reason

    def _escalated(self, _: int, key: str, e: ev.TaskEscalated) -> None:
        task = self.tasks.get(key)
        if task is not None:
            task.escalated_to = e.to_tier
            task.fallback_reason = e.reason

    def _retried(self, _: int, key: str, e: ev.TaskRetried | ev.TaskDeescalated) -> None:
        task = self.tasks.get(key)
        if task is not None:
            task.escalated_to = None
            task.fallback_reason = None

    def _finished(self, _: int, key: str, e: ev.TaskCompleted | ev.TaskCancelled) -> None:
        self.tasks.pop(key, None)

    def _routed(self, position: int, key: str, e: ev.TaskRouted) -> None:
        recorded = e.decision
        config = self.configs.get(recorded.config_position)
        endpoints = self.endpoints_at.get(recorded.endpoint_state_position)
        task = self.tasks.get(key)
        if config is None or endpoints is None or task is None:
            missing = (
                "configuration"
                if config is None
                else "endpoint state"
                if endpoints is None
                else "task"
            )
            self.violations.append(
                Violation(
                    position,
                    str(e.originator_id),
                    "decision_deterministic",
                    f"the decision cites a {missing} the log does not hold"
                    + self._why_missing(recorded, config, endpoints),
                )
            )
            return
        # Recomputed with the recorded stopwatch reading, so it can be compared as is.
        again = decide_route(
            task,
            config,
            endpoints,
            recorded.endpoint_state_position,
            recorded.decided_at,
            recorded.scoring_duration_us,
            config_position=recorded.config_position,
        )
        if again != recorded:
            expected = replace(recorded, scoring_duration_us=0)
            gives = None if again is None else replace(again, scoring_duration_us=0)
            self.violations.append(
                Violation(
                    position,
                    str(e.originator_id),
                    "decision_deterministic",
                    f"recorded {expected!r} but the policy gives {gives!r}",
                )
            )

    def _why_missing(
        self,
        recorded: ev.RoutingDecision,
        config: SchedulerConfig | None,
        endpoints: tuple[EndpointRecord, ...] | None,
    ) -> str:
        if config is None:
            return f" (position {recorded.config_position})"
        if endpoints is None:
            return (
                f" (position {recorded.endpoint_state_position}: no endpoint change there, or "
                f"one replaced more than {self.endpoint_window} positions before the latest)"
            )
        return " (never submitted, or already completed or cancelled)"

    # --- configuration and endpoints --------------------------------------------------

    def _configured(self, position: int, _: str, e: ev.SchedulerConfigured) -> None:
        self.configs[position] = e.config

    def _endpoint_changed(self, position: int, _: str, e: ev.DomainEvent) -> None:
        try:
            self._endpoints.apply(e, position)
        except KeyError:
            return  # an endpoint never registered: nothing to fold it into
        self.endpoints_at[position] = tuple(self._endpoints.endpoints.values())
        order = self._snapshot_order
        order.append(position)
        horizon = position - self.endpoint_window
        # The oldest goes once its successor, which replaced it, is out of the window.
        while len(order) > 1 and order[1] <= horizon:
            del self.endpoints_at[order.popleft()]
