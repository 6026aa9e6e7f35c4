"""Every read model, in the order the runner applies them."""

from __future__ import annotations

from projections.agents import AgentsProjection
from projections.base import Projection
from projections.endpoints import EndpointsProjection
from projections.queue import QueueProjection
from projections.tasks import TasksProjection
from projections.telemetry import TelemetryProjection


def all_projections() -> list[Projection]:
    """A fresh instance of every projection."""
    return [
        TasksProjection(),
        QueueProjection(),
        AgentsProjection(),
        EndpointsProjection(),
        TelemetryProjection(),
    ]
