"""Folds a generated log (``bench_audit.make_log``, kept between runs) into new read
models from the store, ``--repeats`` times, and prints events/s (wall and CPU) with
the load average: the read side's catch-up speed on its own.

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
from pathlib import Path

from tierlog.adapters.tools.bench_audit import make_log
from tierlog.adapters.tools.bench_runner import fold_from_store


def main() -> None:
    """Make the log if it is missing, then fold it and print the figures as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("log")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="the hottest functions too")
    args = parser.parse_args()
    url = f"sqlite:///{Path(args.log).resolve()}"
    if not Path(args.log).exists():
        make_log(url, args.events)
    profiler = cProfile.Profile() if args.profile else None
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            if profiler is not None:
                profiler.enable()
            runs.append(fold_from_store(url, Path(folder) / "read.db"))
            if profiler is not None:
                profiler.disable()
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    figures = {
        "events": runs[0][0],
        "events_per_s": [round(n / wall) for n, wall, _ in runs],
        "median_events_per_s": round(statistics.median(n / wall for n, wall, _ in runs)),
        "median_events_per_cpu_s": round(statistics.median(n / cpu for n, _, cpu in runs)),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
