"""Audit a log: the same as ``tierlog audit`` (exit 0 clean, 1 violations, 2 unreadable)."""

import sys

from tierlog.adapters.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["audit", *sys.argv[1:]]))
