"""Run the restart bench: the same as ``tierlog bench --restart``."""

import sys

from tierlog.adapters.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "--restart", *sys.argv[1:]]))
