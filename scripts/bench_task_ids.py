"""Rows/s appended to a large log with random and with time-ordered task ids
(``adapters/tools/bench_task_ids.py``), as JSON.

``python scripts/bench_task_ids.py [--base-tasks N] [--tasks N] [--batch K] [--repeats R]``
"""

from __future__ import annotations

import argparse
import json

from tierlog.adapters.tools.bench_task_ids import run_task_ids_bench


def main() -> None:
    """Run the bench and print its figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-tasks", type=int, default=200_000)
    parser.add_argument("--tasks", type=int, default=40_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    figures = run_task_ids_bench(args.base_tasks, args.tasks, args.batch, args.repeats)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
