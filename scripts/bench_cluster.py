"""Run the multi-node bench: the same as ``tierlog bench-cluster``."""

import sys

from tierlog.adapters.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench-cluster", *sys.argv[1:]]))
