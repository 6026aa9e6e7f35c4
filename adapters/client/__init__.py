"""tierlog's Python client: agents and operators over HTTP (also importable as
``tierlog.client``).

    from tierlog.client import Agent, AsyncAgent, Operator

``Agent`` (a thread) and ``AsyncAgent`` (asyncio) run a handler for each task the
scheduler assigns them; ``Operator`` submits, reads, cancels, retries and follows the
log. Every error is a ``ClientError``; an answer with an error status is an
``ApiError`` subclass carrying the server's body (``code``, ``field``, ``message``).
"""

from tierlog.adapters.client.agent import Agent
from tierlog.adapters.client.agent_base import AgentStats
from tierlog.adapters.client.api import Backoff
from tierlog.adapters.client.async_agent import AsyncAgent
from tierlog.adapters.client.errors import (
    ApiError,
    BadRequest,
    ClientError,
    Conflict,
    Forbidden,
    InvalidTransition,
    NotFound,
    PayloadTooLarge,
    ServerError,
    ServerUnavailable,
    ServerUnreachable,
    StaleGeneration,
    SubmissionsRefused,
    TaskCancelled,
    TaskFailure,
    Unauthorized,
    ValidationFailed,
)
from tierlog.adapters.client.operator import Operator, Submitted
from tierlog.adapters.client.task import Task

__all__ = [
    "Agent",
    "AgentStats",
    "ApiError",
    "AsyncAgent",
    "Backoff",
    "BadRequest",
    "ClientError",
    "Conflict",
    "Forbidden",
    "InvalidTransition",
    "NotFound",
    "Operator",
    "PayloadTooLarge",
    "ServerError",
    "ServerUnavailable",
    "ServerUnreachable",
    "StaleGeneration",
    "SubmissionsRefused",
    "Submitted",
    "Task",
    "TaskCancelled",
    "TaskFailure",
    "Unauthorized",
    "ValidationFailed",
]
