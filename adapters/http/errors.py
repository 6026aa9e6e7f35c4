"""tierlog's HTTP errors: one JSON body (``error``, ``field``, ``message``), and the
status each kind of tierlog error is answered with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi.responses import JSONResponse

from tierlog.domain import errors

RETRY_AFTER_S = 1  # a 503's Retry-After: the writer retries the store every second
_STATUS = {
    errors.ValidationError: 422,
    errors.NotFoundError: 404,
    errors.InvalidTransitionError: 409,
    errors.StaleGenerationError: 409,
    errors.NotYourTaskError: 403,
    errors.TaskCancelledError: 409,
    errors.IdempotencyConflictError: 409,
    errors.ConcurrencyConflictError: 409,
}


class ApiError(Exception):
    """An HTTP error with tierlog's JSON body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = dict(headers or {})
        """Headers the answer carries beside the error body."""

    def body(self) -> dict[str, Any]:
        """tierlog's one error body."""
        return {"error": self.code, "field": self.field, "message": self.message}


_WHERE = frozenset({"body", "query", "path", "header"})


def invalid_input(problems: Sequence[Mapping[str, Any]], whole: str | None = "body") -> ApiError:
    """The 422 for pydantic's validation ``problems`` (the first one): ``field`` names
    the field at fault, dotted for a nested one, without list indexes; ``whole`` when
    the value as a whole is at fault."""
    first = problems[0] if problems else {"loc": (), "msg": "invalid request"}
    loc = [
        str(part)
        for part in first.get("loc", ())
        if part not in _WHERE and not isinstance(part, int)
    ]
    return ApiError(422, "validation_error", str(first.get("msg")), ".".join(loc) or whole)


def domain_error(exc: errors.DomainError) -> ApiError:
    """The HTTP form of a domain error."""
    status = next((s for t, s in _STATUS.items() if isinstance(exc, t)), 400)
    return ApiError(status, exc.code, exc.message, exc.field)


def command_error(exc: errors.TierlogError) -> ApiError:
    """The HTTP form of the error a command failed with: a refusal (``DomainError``) is
    a 4xx, a fault inside tierlog (already logged with its traceback) a 500."""
    if isinstance(exc, errors.DomainError):
        return domain_error(exc)
    if isinstance(exc, errors.StoreUnavailableError):
        return storage_unavailable(exc)
    if isinstance(exc, errors.NotLeaderError):
        return not_leader(exc)
    return ApiError(500, exc.code, exc.message, exc.field)


def not_leader(exc: errors.NotLeaderError) -> ApiError:
    """The HTTP form of a write that met no leader (an election under way): 503, nothing
    appended, retry after ``Retry-After``."""
    return ApiError(503, exc.code, exc.message)


def storage_unavailable(exc: errors.StoreUnavailableError) -> ApiError:
    """The HTTP form of a storage fault: 503, nothing appended, the request may be retried."""
    return ApiError(
        503,
        exc.code,
        f"the store cannot take this request now ({exc.reason}); nothing was appended: retry later",
    )


def error_response(exc: ApiError) -> JSONResponse:
    """The response for an ``ApiError``: its JSON body (and a challenge on a 401)."""
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if exc.status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_S)}
    if exc.headers:
        headers = {**(headers or {}), **exc.headers}
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)
