"""Run the core benchmarks: the same as ``tierlog bench``."""

import sys

from tierlog.adapters.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
