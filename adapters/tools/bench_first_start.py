"""``tierlog bench --first-start`` (and ``--audit``'s ``first_start_s``): the first
``tierlog serve`` start on a large log that has no read models yet, until ``/healthz``
answers with every read model's lag 0 (issue #16: under 20 s on a 1,000,000-event log).

The log is ``bench --audit``'s mix (``bench_audit.make_log``: every tier, outages that
start timers, failures), generated once in process without read models or checkpoints
beside it; each start is a real ``serve`` process on a fresh copy of it, timed from its
spawn (``bench_restart``). Each round starts it twice, in turns: as ``serve`` does by
default (read models this far behind fold in a worker process while the runtime folds
its state: ``readside/catch_up_worker``) and with the worker turned off (both folds in
step, in one process), so the ratio between the two is measured in the same run.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tierlog.adapters.tools.bench_audit import make_log
from tierlog.adapters.tools.bench_restart import LOG_NAME, timed_start

FIRST_START_TARGET_S = 20.0
# The two ways a first start can fold, as the settings that choose them.
_WAYS = {"worker": {}, "in_step": {"TIERLOG_PROJECTION_WORKER_START_EVENTS": "0"}}


def run_first_start_bench(
    events: int = 1_000_000,
    workdir: str | None = None,
    timeout_s: float = 1800.0,
    repeats: int = 1,
) -> dict[str, Any]:
    """Generate a log of about ``events`` events and time serve's first start on it,
    ``repeats`` times each way."""
    with tempfile.TemporaryDirectory(prefix="bench-first-start-", dir=workdir) as tmp:
        base = Path(tmp)
        pristine = base / "pristine"
        pristine.mkdir()
        started = time.perf_counter()
        head = make_log(f"sqlite:///{pristine / LOG_NAME}", events)
        generated = time.perf_counter() - started
        seconds: dict[str, list[float]] = {way: [] for way in _WAYS}
        rss: dict[str, list[float]] = {way: [] for way in _WAYS}
        for round_ in range(repeats):
            for way, settings in _WAYS.items():
                run = base / f"{way}-{round_}"
                run.mkdir()
                shutil.copyfile(pristine / LOG_NAME, run / LOG_NAME)
                took, rss_mb = timed_start(run, timeout_s, "first-start", settings)
                seconds[way].append(round(took, 3))
                rss[way].append(round(rss_mb, 1))
                shutil.rmtree(run)
    first = statistics.median(seconds["worker"])
    in_step = statistics.median(seconds["in_step"])
    return {
        "first_start_events": head,
        "first_start_generate_s": round(generated, 1),
        "first_start_s": round(first, 3),
        "first_start_runs_s": seconds["worker"],
        "first_start_rss_mb": statistics.median(rss["worker"]),
        "first_start_in_step_s": round(in_step, 3),
        "first_start_in_step_runs_s": seconds["in_step"],
        "first_start_worker_speedup": round(in_step / first, 2),
        "first_start_target_s": FIRST_START_TARGET_S,
        "first_start_meets_target": first < FIRST_START_TARGET_S,
    }
