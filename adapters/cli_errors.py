"""How the command line says what went wrong: in one line, exit 2 for a user's mistake,
never a traceback (unless ``TIERLOG_DEBUG`` is set), never a store's password."""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from typing import NoReturn

import msgspec
from eventsourcing.persistence import PersistenceError

from tierlog.adapters.settings import ENV_PREFIX
from tierlog.adapters.store.faults import one_line, redact, redact_dsns, storage_fault

DEBUG_ENV = f"{ENV_PREFIX}DEBUG"  # set (to anything) to see an unexpected error's traceback


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr (and exit 2), not usage."""

    def error(self, message: str) -> NoReturn:
        """Say what is wrong in one line and point at ``--help``."""
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


def say(message: str, args: argparse.Namespace) -> None:
    """Print an error in one line, with any store password removed."""
    text = redact(message, getattr(args, "store", None), os.environ.get(f"{ENV_PREFIX}STORE"))
    print(f"tierlog: {one_line(redact_dsns(text))}", file=sys.stderr)


def unexpected(exc: Exception, args: argparse.Namespace) -> int:
    """One line for an error no command turned into a ``TierlogError``: 2 when the store
    is at fault (it failed, or holds what this tierlog cannot read), else 1."""
    if isinstance(exc, msgspec.DecodeError | msgspec.ValidationError):
        say(f"the store holds an event this tierlog cannot read: {exc}", args)
        return 2
    reason = storage_fault(exc)
    if reason is not None:
        say(f"the store failed: {reason} ({exc})", args)
        return 2
    if isinstance(exc, PersistenceError | sqlite3.Error) or type(exc).__module__.startswith(
        "psycopg"
    ):
        say(f"the store refused: {exc}", args)
        return 2
    say(f"internal error ({type(exc).__name__}: {exc}); set {DEBUG_ENV}=1 for the traceback", args)
    return 1
