"""The process-memory helpers of ``serve`` against this machine's real C library."""

from __future__ import annotations

import platform
import subprocess
import sys
import time

import pytest

from tierlog.adapters.runtime.process_memory import (
    FreeMemoryTrimmer,
    fix_mmap_threshold,
    release_free_memory,
    trimming_free_memory,
)

glibc_only = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's; elsewhere it does nothing"
)


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@glibc_only
def test_free_chunks_between_live_ones_go_back_to_the_system() -> None:
    # 2 KB objects come from malloc, not Python's small-object allocator. Freeing all
    # but the last leaves ~100 MB free below a live chunk: free() alone cannot give it
    # back (it only trims the top of the heap); malloc_trim can.
    chunks = [bytes(2048) for _ in range(50_000)]
    pin = chunks[-1]
    del chunks[:-1]
    held = _rss_mb()
    assert release_free_memory()
    assert _rss_mb() < held - 50
    assert len(pin) == 2048


@glibc_only
def test_the_trimmer_trims_on_its_thread_until_stopped() -> None:
    trimmer = FreeMemoryTrimmer(every_s=0.01)
    trimmer.start()
    deadline = time.monotonic() + 10
    while trimmer.rounds < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    trimmer.stop()
    assert trimmer.rounds >= 3
    rounds = trimmer.rounds
    time.sleep(0.05)
    assert trimmer.rounds == rounds


def test_zero_seconds_means_never() -> None:
    with trimming_free_memory(0) as trimmer:
        assert trimmer is None


@glibc_only
def test_the_block_stops_its_trimmer() -> None:
    with trimming_free_memory(0.01) as trimmer:
        assert trimmer is not None
        assert trimmer.running
    assert not trimmer.running


_REUSED_BUFFER = """
import sys
from tierlog.adapters.runtime.process_memory import fix_mmap_threshold

def rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

if sys.argv[1] == "fixed":
    assert fix_mmap_threshold(128)
base = rss_mb()
for _ in range(3):  # a big buffer made and freed, as a checkpoint's dump is
    buffer = bytearray(24 * 1024 * 1024)
    buffer[::4096] = b"x" * len(buffer[::4096])
    del buffer
print(rss_mb() - base)
"""


def _kept_after_big_buffers(mode: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _REUSED_BUFFER, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return float(done.stdout.strip())


@glibc_only
def test_a_fixed_mmap_threshold_hands_big_freed_buffers_back() -> None:
    # glibc's sliding threshold moves the second buffer onto the heap, where it stays
    # resident once freed; with the threshold fixed each buffer is unmapped when freed.
    assert _kept_after_big_buffers("sliding") > 16
    assert _kept_after_big_buffers("fixed") < 4


def test_zero_leaves_the_threshold_alone() -> None:
    assert fix_mmap_threshold(0)
