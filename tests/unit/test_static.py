"""The static checks CI relies on: ruff (lint and format) and mypy --strict are clean.

Each runs as a subprocess from the repository root with this interpreter's environment,
so CI's one command (``python -m pytest -q``) runs them too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, input=stdin, capture_output=True, text=True
    )


def _clean(*args: str) -> None:
    done = _run(*args)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}{done.stderr}"


def test_ruff_check_is_clean() -> None:
    _clean("-m", "ruff", "check", ".")


def test_ruff_format_is_clean() -> None:
    _clean("-m", "ruff", "format", "--check", ".")


@pytest.mark.slow
def test_mypy_strict_is_clean() -> None:
    _clean("scripts/typecheck.py")


@pytest.mark.parametrize(
    "line",
    [
        "import domain",
        "import adapters.http.app",
        "from projections import queue",
        "from domain.events import TaskSubmitted",
    ],
)
def test_a_bare_source_folder_import_is_refused(line: str) -> None:
    # As a test file would have it: the folders install under tierlog, so a bare name
    # is another distribution's package, or this checkout by accident.
    done = _ruff_tid251(line)
    assert done.returncode == 1 and "TID251" in done.stdout, done.stdout + done.stderr


def test_an_import_under_tierlog_is_not_refused() -> None:
    done = _ruff_tid251("from tierlog.domain.events import TaskSubmitted")
    assert done.returncode == 0, done.stdout + done.stderr


def _ruff_tid251(line: str) -> subprocess.CompletedProcess[str]:
    """Ruff's banned-import rule (as pyproject.toml configures it) over one test file."""
    return _run(
        "-m",
        "ruff",
        "check",
        "--select",
        "TID251",
        "--stdin-filename",
        "tests/unit/test_bare_import.py",
        "-",
        stdin=f"{line}\n",
    )
