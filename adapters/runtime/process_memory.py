"""How a long-running process keeps its memory to what it uses (glibc's malloc).

By default glibc gives each busy thread an arena of its own, and every arena keeps the
memory it once held: a server with a dozen threads grows by tens of MB of memory that
is free but kept. ``limit_malloc_arenas`` caps the arenas (``MALLOC_ARENA_MAX``, set
before any thread starts).

Even within few arenas, a server that allocates and frees all day leaves free chunks
between live ones that glibc keeps (measured: after 30,000 tasks through ``serve``,
17 MB of the heap was free but resident, against 25 MB in use). ``trimming_free_memory``
runs glibc's ``malloc_trim`` now and then on a thread of its own, which hands those
pages back to the operating system (a fraction of a millisecond to a few ms a call).
Elsewhere than glibc both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

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


def release_free_memory() -> bool:
    """Give the operating system back the free pages of every malloc arena
    (``malloc_trim(0)``). False where the C library is not glibc or nothing was freed."""
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return bool(libc.malloc_trim(0))


class FreeMemoryTrimmer:
    """Calls ``release_free_memory`` every ``every_s`` seconds on a daemon thread."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.rounds = 0
        """How many times it has trimmed (a test and a curious operator read it)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether its thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="tierlog-malloc-trim", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it (it is never inside a long call)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                release_free_memory()
            except Exception:  # a failed trim costs memory, never the server
                log.exception("malloc_trim failed")
            self.rounds += 1


@contextmanager
def trimming_free_memory(every_s: float) -> Iterator[FreeMemoryTrimmer | None]:
    """While the block runs, hand free heap pages back every ``every_s`` seconds
    (nothing when ``every_s`` is 0 or the C library is not glibc)."""
    if every_s <= 0 or _libc() is None:
        yield None
        return
    trimmer = FreeMemoryTrimmer(every_s)
    trimmer.start()
    try:
        yield trimmer
    finally:
        trimmer.stop()


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Run the block with Python's cyclic garbage collector off, then as it was.

    For long folds whose objects form no reference cycles (events, rows, task states):
    reference counting frees them all the same, and every collection the allocations
    would trigger walks the whole heap held so far (measured: 13% of a ``serve`` first
    start on a 200,000-event log)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
