"""tierlog's HTTP errors: one JSON body (``error``, ``field``, ``message``), and the
status each kind of tierlog error is answered with."""

from __future__ import annotations

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

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


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
    body = {"error": exc.code, "field": exc.field, "message": exc.message}
    return JSONResponse(body, status_code=exc.status, headers=headers)
