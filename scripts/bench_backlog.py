"""Milliseconds per commit of 1,000 submissions while the backlog grows with no
endpoint to route to (``adapters/tools/bench_backlog.py``), as JSON.

``python scripts/bench_backlog.py [--batches N] [--batch K]``
"""

from __future__ import annotations

import argparse
import json

from tierlog.adapters.tools.bench_backlog import run_backlog_bench


def main() -> None:
    """Run the bench and print its figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps(run_backlog_bench(args.batches, args.batch), indent=2))


if __name__ == "__main__":
    main()
