"""``tierlog bench --audit``'s ``first_start_s``: the first ``tierlog serve`` start on a
large log that has no read models yet, until ``/healthz`` answers with every read
model's lag 0 (issue #16: under 20 s on a 1,000,000-event log).

The log is ``bench --audit``'s mix (``bench_audit.make_log``: every tier, outages that
start timers, failures), generated in process without read models or checkpoints
beside it; ``serve`` is a real process, timed from its spawn (``bench_restart``).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from tierlog.adapters.tools.bench_audit import make_log
from tierlog.adapters.tools.bench_restart import LOG_NAME, timed_start

FIRST_START_TARGET_S = 20.0


def run_first_start_bench(
    events: int = 1_000_000, workdir: str | None = None, timeout_s: float = 1800.0
) -> dict[str, Any]:
    """Generate a log of about ``events`` events and time serve's first start on it."""
    with tempfile.TemporaryDirectory(prefix="bench-first-start-", dir=workdir) as tmp:
        base = Path(tmp)
        started = time.perf_counter()
        head = make_log(f"sqlite:///{base / LOG_NAME}", events)
        generated = time.perf_counter() - started
        seconds, rss_mb = timed_start(base, timeout_s, "first-start")
    return {
        "first_start_events": head,
        "first_start_generate_s": round(generated, 1),
        "first_start_s": round(seconds, 3),
        "first_start_rss_mb": round(rss_mb, 1),
        "first_start_target_s": FIRST_START_TARGET_S,
        "first_start_meets_target": seconds < FIRST_START_TARGET_S,
    }
