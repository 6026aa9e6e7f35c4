"""Run the simulated fleet: the same as ``tierlog demo``."""

import sys

from tierlog.adapters.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["demo", *sys.argv[1:]]))
