"""The errors the client library raises: one base, and one class per answer a caller
handles differently, each carrying the server's error body (``code``, ``field``,
``message``)."""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """The base of everything ``tierlog.client`` raises."""


class TaskFailure(Exception):
    """Raised by a handler to fail its task with exactly this text (any other exception
    fails it with its type and message)."""


class ServerUnreachable(ClientError):
    """No answer: the connection was refused, reset or timed out. Transient."""


class ApiError(ClientError):
    """The server answered with an error; ``code``, ``field`` and ``message`` are its body.

    ``problem`` is the message under the name the README gives it (what is wrong with
    ``field``).
    """

    status: int = 0

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        body: Any = None,
    ) -> None:
        where = f" ({field})" if field else ""
        super().__init__(f"{status} {code}{where}: {message}")
        self.status, self.code, self.message, self.field = status, code, message, field
        self.body = body

    @property
    def problem(self) -> str:
        """What the server says is wrong (its ``message``)."""
        return self.message


class BadRequest(ApiError):
    """400: a request the server could not take (and no more specific class fits)."""


class Unauthorized(ApiError):
    """401: no token, or one the server does not know (an agent's replaced token too)."""


class Forbidden(ApiError):
    """403: the token's role may not do this (``not_your_task`` for another's task)."""


class NotFound(ApiError):
    """404: no such task, agent or endpoint (or a task this agent never held)."""


class Conflict(ApiError):
    """409: the request does not fit the current state; nothing was appended."""


class StaleGeneration(Conflict):
    """409 ``stale_generation``: the task moved on (reclaimed, requeued) since this
    agent got it; the agent's work on it is void."""


class TaskCancelled(Conflict):
    """409 ``cancelled``: an operator cancelled the task while this agent held it."""


class InvalidTransition(Conflict):
    """409 ``invalid_transition``: the task is not in a state that allows this."""


class PayloadTooLarge(ApiError):
    """413: the request body is over the server's ``max_body_bytes``."""


class ValidationFailed(ApiError):
    """422: a field is malformed or over a limit (``field`` names it)."""


class ServerUnavailable(ApiError):
    """503 (the store fails, no leader yet) or a gateway's 502/504. Transient: nothing
    was appended, the same request may be sent again."""


class ServerError(ApiError):
    """500: a fault inside the server while deciding this request (logged there)."""


class SubmissionsRefused(ClientError):
    """``Operator.submit_many``: the server refused some of the submissions (the others
    were submitted). ``results`` holds, in the given order, each one's ``Submitted`` or
    the ``ApiError`` it was refused with; ``refused`` maps the refused ones' indexes to
    their errors."""

    def __init__(self, results: list[Any]) -> None:
        self.results = results
        self.refused: dict[int, ApiError] = {
            index: result for index, result in enumerate(results) if isinstance(result, ApiError)
        }
        first = min(self.refused)
        super().__init__(
            f"{len(self.refused)} of {len(results)} submissions refused; "
            f"the first, #{first}: {self.refused[first]}"
        )


_BY_CODE: dict[str, type[ApiError]] = {
    "stale_generation": StaleGeneration,
    "cancelled": TaskCancelled,
    "invalid_transition": InvalidTransition,
}
_BY_STATUS: dict[int, type[ApiError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    500: ServerError,
    502: ServerUnavailable,
    503: ServerUnavailable,
    504: ServerUnavailable,
}


def error_for(status: int, body: Any) -> ApiError:
    """The typed error for an error answer and its (decoded) body."""
    fields = body if isinstance(body, dict) else {}
    code = str(fields.get("error") or f"http_{status}")
    message = str(fields.get("message") or (body if isinstance(body, str) else "") or code)
    field = fields.get("field")
    kind = _BY_CODE.get(code) if status == 409 else None
    kind = kind or _BY_STATUS.get(status) or (ServerError if status >= 500 else BadRequest)
    error = kind(status, code, message, str(field) if field is not None else None, body)
    error.status = status
    return error


def transient(exc: BaseException) -> bool:
    """Whether the same request may succeed if sent again later: no answer, or a 503."""
    return isinstance(exc, ServerUnreachable | ServerUnavailable)
