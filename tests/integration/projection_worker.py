"""Runs the projection runner in small batches until caught up (the crash test kills it)."""

from __future__ import annotations

import sys

from tierlog.adapters.readside.runner import ProjectionRunner
from tierlog.adapters.store.event_log import EventLog


def main() -> None:
    runner = ProjectionRunner(EventLog(sys.argv[1]), batch=int(sys.argv[2]))
    print("started", flush=True)
    runner.run_until_caught_up()
    runner.close()


if __name__ == "__main__":
    main()
