"""Milliseconds per commit of 1,000 submissions while the backlog grows with no
endpoint to route to, or beside idle agents that cannot take its tasks
(``adapters/tools/bench_backlog.py``), as JSON.

``python scripts/bench_backlog.py [--batches N] [--batch K] [--idle-agents A]``
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
    parser.add_argument("--idle-agents", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(run_backlog_bench(args.batches, args.batch, args.idle_agents), indent=2))


if __name__ == "__main__":
    main()
