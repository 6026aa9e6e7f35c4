"""Unit-test harness: the pure domain, a virtual clock, one command + scheduling pass per step."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import pytest

from tierlog.domain import events as ev
from tierlog.domain.aggregates.task import TaskRecord
from tierlog.domain.clock import VirtualClock
from tierlog.domain.commands import COMMANDS
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.errors import DomainError
from tierlog.domain.service import SchedulerService
from tierlog.domain.unit_of_work import UnitOfWork

E = TypeVar("E", bound=ev.DomainEvent)


class Harness:
    """Drives ``SchedulerService`` the way the runtime does, on a ``VirtualClock``."""

    def __init__(self, **config: Any) -> None:
        config.setdefault("fallback_wait_s", 5.0)
        self.config = SchedulerConfig(**config)
        self.svc = SchedulerService(self.config)
        self.clock = VirtualClock()
        self.log: list[ev.DomainEvent] = []  # every event emitted so far
        # Agents poll all the time, as live ones do: each step hears from every agent
        # but those a test has silenced (agent liveness, issue #13).
        self.silent: set[str] = set()

    @property
    def state(self) -> Any:
        return self.svc.state

    def now(self) -> datetime:
        return self.clock.now()

    def run(self, cmd: str | None = None, **kw: Any) -> tuple[Any, list[ev.DomainEvent]]:
        """One command (named by its verb, built from ``kw``), or none, then the
        scheduling pass, in one committed unit of work."""
        for agent_id in self.state.agents:
            if agent_id not in self.silent:
                self.svc.presence.heard(agent_id, self.now())
        with UnitOfWork(self.state) as uow:
            result = self.svc.handle(COMMANDS[cmd](**kw), uow, self.now()) if cmd else None
            self.svc.schedule(uow, self.now())
            uow.commit()
        self.log.extend(uow.events)
        return result, uow.events

    def reject(self, cmd: str, **kw: Any) -> DomainError:
        """A command that must fail, in building it or in deciding it: it emits nothing
        and leaves state unchanged."""
        before = self.state.snapshot()
        with UnitOfWork(self.state) as uow:
            with pytest.raises(DomainError) as info:
                self.svc.handle(COMMANDS[cmd](**kw), uow, self.now())
            assert uow.events == []
            assert self.state.snapshot() == before
        return info.value

    def silence(self, agent_id: str) -> None:
        """The agent stops polling (it is alive in the log, but heard from no more)."""
        self.silent.add(agent_id)

    def poll(self, agent_id: str) -> tuple[Any, list[ev.DomainEvent]]:
        """The agent polls, as the HTTP edge handles it: heard from, and brought back by
        ``check_in_agent`` if it was offline for silence."""
        self.silent.discard(agent_id)
        return self.run("check_in_agent", agent_id=agent_id)

    def advance(self, seconds: float) -> list[ev.DomainEvent]:
        self.clock.advance(seconds)
        return self.run()[1]

    def at(self, when: datetime) -> list[ev.DomainEvent]:
        self.clock.set(when)
        return self.run()[1]

    # --- set-up shortcuts -------------------------------------------------------------

    def endpoint(self, host: str = "gpu-a", models: Sequence[str] = ("llama3",)) -> str:
        endpoint_id, _ = self.run("register_endpoint", host=host, models=list(models))
        self.run("report_health", endpoint_id=endpoint_id, ok=True)
        return str(endpoint_id)

    def agent(
        self, agent_id: str = "a1", capabilities: Sequence[str] = (), ollama_host: str | None = None
    ) -> list[ev.DomainEvent]:
        return self.run(
            "register_agent",
            agent_id=agent_id,
            capabilities=list(capabilities),
            ollama_host=ollama_host,
        )[1]

    def submit(self, tier: str | None = "standard", **kw: Any) -> UUID:
        kw.setdefault("description", "implement the feature")
        result, _ = self.run("submit_task", complexity_tier=tier, **kw)
        return result.task_id  # type: ignore[no-any-return]

    def task(self, task_id: UUID) -> TaskRecord:
        return self.state.tasks[task_id]  # type: ignore[no-any-return]

    # --- reading events (static, so test modules need not import this file) ----------

    @staticmethod
    def of(events: Sequence[ev.DomainEvent], cls: type[E]) -> list[E]:
        """The events of one type, in order."""
        return [e for e in events if isinstance(e, cls)]

    @staticmethod
    def names(events: Sequence[ev.DomainEvent]) -> list[str]:
        return [type(e).__name__ for e in events]


@pytest.fixture
def h() -> Harness:
    return Harness()


@pytest.fixture
def make() -> type[Harness]:
    """A harness factory, for non-default configuration: ``make(claude_enabled=False)``."""
    return Harness
