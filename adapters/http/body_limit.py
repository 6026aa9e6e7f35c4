"""The request body limit: no body over ``max_body_bytes`` is read (413)."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException

from tierlog.adapters.http.errors import ApiError, error_response


class BodyTooLarge(StarletteHTTPException):
    """A request body over the limit (raised while it is read; answered 413)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body is over the limit of {max_bytes} bytes")
        self.max_bytes = max_bytes

    def api_error(self) -> ApiError:
        """tierlog's JSON error for it, naming the limit's setting."""
        return ApiError(413, "body_too_large", f"{self.detail} (max_body_bytes)", "body")


class BodyLimit:
    """ASGI middleware: no request body over ``max_bytes`` is read.

    A ``Content-Length`` over the limit is answered 413 before anything is read; a body
    sent without one (chunked) is counted as it streams in, and reading past the limit
    raises ``BodyTooLarge`` (413) at once, so no more than the limit is ever held.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Refuse a declared length over the limit, or count the body as it is read."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(BodyTooLarge(self.max_bytes).api_error())(scope, receive, send)
            return
        received = 0

        async def limited() -> Any:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)
