"""Folds a generated log into new read models from the store, as ``tierlog project``
does, and reports events/s (wall and CPU); the log is made once and kept.

``python scripts/bench_fold.py LOG.db [--events N] [--repeats R] [--profile]``
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path

from tierlog.adapters import bootstrap
from tierlog.adapters.readside.read_store import ReadStore
from tierlog.adapters.settings import Settings
from tierlog.adapters.store.event_log import EventLog
from tierlog.adapters.tools.bench_audit import make_log


def fold_once(url: str, profile: bool) -> tuple[int, float, float]:
    """Events folded, wall seconds and CPU seconds of one fold into new read models."""
    log = EventLog(url)
    with tempfile.TemporaryDirectory() as folder:
        store = ReadStore(log, sqlite_path=Path(folder) / "read.db")
        runner = bootstrap.build_runner(Settings(store=url), log, store=store)
        runner.start()
        profiler = cProfile.Profile() if profile else None
        wall, cpu = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        folded = runner.run_until_caught_up()
        if profiler is not None:
            profiler.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        runner.close()
    log.close()
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return folded, wall, cpu


def main() -> None:
    """Parse the arguments, make the log if missing, fold it ``--repeats`` times."""
    parser = argparse.ArgumentParser()
    parser.add_argument("log")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    url = f"sqlite:///{Path(args.log).resolve()}"
    if not Path(args.log).exists():
        make_log(url, args.events)
    runs = [fold_once(url, args.profile) for _ in range(args.repeats)]
    print(
        json.dumps(
            {
                "events": runs[0][0],
                "events_per_s": [round(n / w) for n, w, _ in runs],
                "median_events_per_s": round(statistics.median(n / w for n, w, _ in runs)),
                "median_events_per_cpu_s": round(statistics.median(n / c for n, _, c in runs)),
                "load_average": os.getloadavg(),
            }
        )
    )


if __name__ == "__main__":
    main()
