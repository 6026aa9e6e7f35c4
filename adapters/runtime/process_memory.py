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

Python's cyclic garbage collector is the other cost of a busy process: by default a
young collection runs every 700 container allocations and a full one every 100 young
ones, and each full one walks every tracked object, the scheduler's whole state
included. Every group commit allocates tens of thousands of short-lived containers
(commands, events, records, index entries), nearly all freed by reference counting
and none in a cycle, so those collections find almost nothing. ``tune_collector``
raises the thresholds (issue #17: submit->assigned took about a fifth less time,
measured with ``tierlog bench``); cycles are still collected, only later.
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

from tierlog.adapters.store.sqlite import limit_sqlite_memory

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
GC_THRESHOLDS = (50_000, 20, 10)
"""The collector's thresholds for a scheduler process: a young collection every 50,000
container allocations (instead of 700), a middle one every 20 young ones, a full one
every 10 middle ones (and, as always, only once the objects waiting for one are a
quarter of those already old)."""


def tune_collector(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> tuple[int, int, int]:
    """Raise the garbage collector's thresholds to ``thresholds`` (never lower them: a
    process that chose higher ones, or turned it off, keeps its choice); returns the
    thresholds now in force."""
    current = gc.get_threshold()
    if current[0] != 0:  # 0 turns automatic collection off
        gc.set_threshold(*(max(c, t) for c, t in zip(current, thresholds, strict=True)))
    return gc.get_threshold()


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


def fix_mmap_threshold(kilobytes: int) -> bool:
    """Serve every allocation of ``kilobytes`` KiB or more with a mapping of its own,
    unmapped when freed (glibc's ``M_MMAP_THRESHOLD``); 0 leaves glibc's sliding
    threshold. False where the C library is not glibc.

    By default glibc raises the threshold to the size of the largest mapped block freed
    so far (up to 32 MB), and blocks below it then come from the heap, where freeing
    them rarely gives memory back: one multi-megabyte checkpoint dump is enough to move
    every later large buffer of a long-running ``serve`` onto the heap.
    """
    if kilobytes == 0:
        return True
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, kilobytes * 1024))


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


def limit_process_memory(*, arenas: int, mmap_threshold_kb: int, sqlite_mb: int) -> None:
    """A long-running process's limits (``serve``'s and its read models' process's): at
    most ``arenas`` malloc arenas (call it before any thread starts), the mmap threshold
    fixed (0: glibc's sliding one), SQLite's page caches under ``sqlite_mb`` together."""
    limit_malloc_arenas(arenas)
    fix_mmap_threshold(mmap_threshold_kb)
    limit_sqlite_memory(sqlite_mb)
