"""Bearer tokens: one operator token, and one token per agent (stored only as a digest)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from tierlog.adapters.store.event_log import EventLog


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
