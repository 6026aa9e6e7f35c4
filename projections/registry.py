"""Every read model, in the order the runner applies them."""

from __future__ import annotations

from tierlog.projections.agents import AgentsProjection
from tierlog.projections.base import Projection
from tierlog.projections.endpoints import EndpointsProjection
from tierlog.projections.queue import QueueProjection
from tierlog.projections.tasks import TasksProjection
from tierlog.projections.telemetry import TelemetryProjection


def all_projections() -> list[Projection]:
    """A fresh instance of every projection."""
    return [
        TasksProjection(),
        QueueProjection(),
        AgentsProjection(),
        EndpointsProjection(),
        TelemetryProjection(),
    ]
