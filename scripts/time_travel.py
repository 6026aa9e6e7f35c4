"""Step through a log: every event with the state after it, or only up to the events that
match ``--until`` (an event type such as FallbackTimerFired, or a task id).

    python scripts/time_travel.py --store sqlite:///./tierlog.db --until FallbackTimerFired
"""

import argparse
import os
import sys

from tierlog.adapters.history.stepper import steps
from tierlog.adapters.store.event_log import DEFAULT_STORE, EventLog
from tierlog.domain.errors import TierlogError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default=os.environ.get("TIERLOG_STORE", DEFAULT_STORE))
    parser.add_argument("--from", dest="start", type=int, default=0, help="start after")
    parser.add_argument("--until", help="an event type or a task id")
    parser.add_argument(
        "--limit",
        type=int,
        default=0,
        help="stop after this many steps (with --until: matches; default 1)",
    )
    args = parser.parse_args()
    if args.until and not args.limit:
        args.limit = 1  # run until the first match, then stop there
    try:
        log = EventLog(args.store, read_only=True)  # a look at the log changes nothing
    except TierlogError as exc:
        print(f"tierlog: {exc.message}", file=sys.stderr)
        return 2
    try:
        for n, step in enumerate(steps(log, start=args.start, until=args.until), 1):
            print(
                f"{step.position:>8} {step.event.timestamp.isoformat()} "
                f"{type(step.event).__name__:<26} {step.summary}"
            )
            if args.limit and n >= args.limit:
                break
    finally:
        log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
