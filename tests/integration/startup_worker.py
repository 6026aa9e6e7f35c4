"""One OS process of the start-together test: ``THREADS`` threads that each build and
start everything ``serve`` starts on one store, at the same moment, then submit a task
and bring the read models up to date.

Usage: startup_worker.py STORE_URL THREADS START_AT (a time.time() to start at)
Prints one JSON line: {"started": N, "errors": [...]}.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from tierlog.adapters import bootstrap
from tierlog.adapters.settings import Settings
from tierlog.domain import commands as cmd


def start_one(url: str, errors: list[str]) -> None:
    try:
        system = bootstrap.build_system(Settings(store=url))
        try:
            system.start()
            system.runtime.start_background()
            system.runtime.call(cmd.SubmitTask(description="fix typo"))
            system.runner.run_until_caught_up()
        finally:
            system.close()
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")


def main() -> None:
    url, threads, start_at = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    errors: list[str] = []
    time.sleep(max(0.0, start_at - time.time()))
    workers = [threading.Thread(target=start_one, args=(url, errors)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(json.dumps({"started": threads - len(errors), "errors": errors}))


if __name__ == "__main__":
    main()
