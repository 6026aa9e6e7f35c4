"""Bearer tokens and roles: the operator token (admin), an optional read-only viewer
token, and one token per agent (stored only as a digest, which never leaves the server)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierlog.adapters.store.event_log import EventLog

ADMIN, VIEWER, AGENT = "admin", "viewer", "agent"
"""The three kinds of token (SPEC §5.2): the operator's, the read-only viewer's, an agent's."""
# Role names as the OpenAPI document gives them in each operation's ``security``
# (OpenAPI 3.1 lets a non-OAuth scheme list role names): an agent acting on itself, and
# an agent reading a task it has held.
AGENT_SELF, AGENT_OWN_TASK = "agent:self", "agent:own-task"
READERS = (ADMIN, VIEWER)
_WHO = {
    ADMIN: "the operator token",
    VIEWER: "the viewer token",
    AGENT: "an agent's own token",
    AGENT_SELF: "the token of the agent it names",
    AGENT_OWN_TASK: "the token of an agent that has held the task",
}


@dataclass
class Caller:
    """Who is calling: the operator, the read-only viewer, or one agent."""

    role: str
    agent_id: str | None = None
    token_sha256: str | None = None

    @property
    def is_admin(self) -> bool:
        """Whether the caller holds the operator token."""
        return self.role == ADMIN

    @property
    def reads_all(self) -> bool:
        """Whether the caller may read everything (the operator and the viewer)."""
        return self.role in READERS

    def agent(self) -> str:
        """The calling agent's id (for routes behind an agent-only check, which ensures
        there is one)."""
        if self.agent_id is None:  # a route without an agent-only check: a bug
            raise PermissionError("this needs an agent's own token")
        return self.agent_id


def forbidden_needs(roles: Sequence[str]) -> str:
    """What a 403 says a route needs, from the roles it accepts."""
    return "this needs " + " or ".join(_WHO[role] for role in roles)


SECRET_FIELDS = frozenset({"token_sha256"})
"""Payload fields that never leave the server, for any caller (an agent's token digest
would let anyone who reads it test guesses of the token offline)."""
REDACTED = "[redacted]"


def redacted(payload: dict[str, Any]) -> dict[str, Any]:
    """An event's payload with every secret field's value (if set) replaced."""
    return {
        key: REDACTED if key in SECRET_FIELDS and value is not None else value
        for key, value in payload.items()
    }


def digest(token: str) -> str:
    """The SHA-256 hex digest under which a token is recorded."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random bearer token."""
    return secrets.token_urlsafe(32)


def same_token(presented: str, expected: str) -> bool:
    """Constant-time comparison."""
    return hmac.compare_digest(presented.encode(), expected.encode())


def admin_token_path(log: EventLog) -> Path:
    """Where a generated operator token is kept: beside a SQLite log, else in ./ ."""
    if log.sqlite_path is not None:
        path = Path(log.sqlite_path)
        return path.with_name(path.stem + ".admin-token")
    return Path("tierlog.admin-token")


def load_admin_token(log: EventLog, environ: dict[str, str] | None = None) -> tuple[str, bool]:
    """The operator token and whether it was generated just now.

    ``TIERLOG_ADMIN_TOKEN`` wins; else the kept file; else a new token is written to
    that file, readable only by its owner.
    """
    env = os.environ if environ is None else environ
    if env.get("TIERLOG_ADMIN_TOKEN"):
        return env["TIERLOG_ADMIN_TOKEN"], False
    path = admin_token_path(log)
    if path.exists():
        return path.read_text().strip(), False
    token = new_token()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token, True
