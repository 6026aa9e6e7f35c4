"""How a long-running process keeps its memory to what it uses (glibc's malloc).

By default glibc gives each busy thread an arena of its own, and every arena keeps the
memory it once held: a server with a dozen threads grows by tens of MB of memory that
is free but kept. ``limit_malloc_arenas`` caps the arenas (``MALLOC_ARENA_MAX``, set
before any thread starts). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

M_ARENA_MAX = -8  # glibc's malloc.h


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018  (glibc has it; a libc without it is not glibc)
    except (OSError, AttributeError):
        return None
    return libc


def limit_malloc_arenas(count: int) -> bool:
    """At most ``count`` malloc arenas for this process; call it before any thread
    starts. False where the C library is not glibc."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, count))
