"""JSON bodies only: a request body not declared JSON is refused (415) before it is read.

Without this, a body sent as a form (what ``curl -d`` sends by default) reaches pydantic
as text and fails as "Input should be a valid dictionary", which says nothing of the
header that is wrong.
"""

from __future__ import annotations

from typing import Any

from tierlog.adapters.http.errors import ApiError, error_response

_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def is_json(content_type: str) -> bool:
    """Whether a ``Content-Type`` value declares JSON (``application/json`` or a
    ``+json`` type, with any parameters)."""
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def not_json(content_type: str) -> ApiError:
    """The 415 for a body sent with another (or no) ``Content-Type``."""
    got = f"it says {content_type!r}" if content_type else "it has none"
    return ApiError(
        415,
        "unsupported_media_type",
        f"the request body must be JSON, sent with the header Content-Type: application/json "
        f"({got})",
        "content-type",
    )


def _has_body(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length", b"")
    if length:
        return length.strip() != b"0"
    return b"transfer-encoding" in headers


class JsonBodies:
    """ASGI middleware: a POST, PUT or PATCH that carries a body must declare it JSON.

    A request without a body (``retry``, a ``cancel`` without a reason) needs no header.
    It runs after the token check, so a request without a valid token is still a 401.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Refuse a body that is not declared JSON, or pass the request on."""
        if scope["type"] == "http" and scope["method"] in _WITH_BODY:
            headers = dict(scope["headers"])
            content_type = headers.get(b"content-type", b"").decode("latin-1")
            if _has_body(headers) and not is_json(content_type):
                await error_response(not_json(content_type))(scope, receive, send)
                return
        await self.app(scope, receive, send)
