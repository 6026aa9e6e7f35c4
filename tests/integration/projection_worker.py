"""Runs the projection runner in small batches until caught up (the crash test kills it)."""

from __future__ import annotations

import sys

from tierlog.adapters import bootstrap
from tierlog.adapters.settings import Settings


def main() -> None:
    settings = Settings(store=sys.argv[1], projection_batch=int(sys.argv[2]))
    runner = bootstrap.build_runner(settings, bootstrap.open_log(settings))
    runner.start()
    print("started", flush=True)
    runner.run_until_caught_up()
    runner.close()


if __name__ == "__main__":
    main()
