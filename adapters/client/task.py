"""The task an agent's handler is given: the assignment the server answered, typed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class Task:
    """One assignment: the submission's fields, the generation this agent holds it at,
    and the routing decision (tier, target, endpoint, model).

    ``stopped`` is set when the agent stops caring about the handler's result: the task
    was cancelled or reclaimed (stale generation), or the agent is stopping. A long
    handler may check ``task.stopped.is_set()`` or register ``on_stop`` callbacks (the
    agent runner kills its command with one); an async handler is cancelled outright.
    """

    task_id: str
    generation: int
    description: str
    data: dict[str, Any]
    stopped: threading.Event = field(default_factory=threading.Event, repr=False)
    stop_reason: str | None = None
    _callbacks: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_assignment(cls, data: dict[str, Any]) -> Task:
        """The task from ``GET /v1/agents/{id}/assignment``'s answer."""
        return cls(
            task_id=str(data["task_id"]),
            generation=int(data["generation"]),
            description=str(data.get("description", "")),
            data=data,
        )

    @property
    def routing_decision(self) -> dict[str, Any]:
        """The decision this assignment was made under (empty if the server sent none)."""
        decision = self.data.get("routing_decision")
        return decision if isinstance(decision, dict) else {}

    @property
    def tier(self) -> str | None:
        """The tier the task was routed at (``trivial``, ``standard``, ``complex``)."""
        value = self.routing_decision.get("effective_tier")
        return str(value) if value is not None else None

    @property
    def model(self) -> str | None:
        """The model the decision selected (an Ollama model for ``standard``)."""
        value = self.routing_decision.get("selected_model")
        return str(value) if value is not None else None

    @property
    def endpoint(self) -> str | None:
        """The endpoint (``host:port``) the decision selected, if any."""
        value = self.routing_decision.get("selected_endpoint")
        return str(value) if value is not None else None

    @property
    def metadata(self) -> dict[str, Any]:
        """The submission's ``metadata`` object."""
        value = self.data.get("metadata")
        return value if isinstance(value, dict) else {}

    @property
    def lease_expires_at(self) -> datetime | None:
        """When the lease runs out unless heartbeated (the server's clock)."""
        value = self.data.get("lease_expires_at")
        return datetime.fromisoformat(value) if isinstance(value, str) else None

    @property
    def cancelled(self) -> bool:
        """Whether the handler's work on this task is void (see ``stopped``)."""
        return self.stopped.is_set()

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the agent's thread) once the task is stopped; at once
        if it already is."""
        with self._lock:
            if not self.stopped.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def stop(self, reason: str) -> None:
        """Mark the handler's work void and run the ``on_stop`` callbacks (once)."""
        with self._lock:
            if self.stopped.is_set():
                return
            self.stop_reason = reason
            self.stopped.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()
