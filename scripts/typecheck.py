"""Type-check the installed layout: ``mypy --strict`` over ``tierlog.*``.

The source folders (``domain/``, ``projections/``, ``adapters/``, ``client/``) install as
``tierlog.domain`` and so on through setuptools' ``package-dir`` mapping, which mypy
cannot follow (an editable install maps names with an import hook). This script lays
the same mapping out as symbolic links in a temporary folder and points mypy at it.

    python scripts/typecheck.py [extra mypy arguments]
"""

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("domain", "projections", "adapters", "client")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tierlog-typecheck-") as tmp:
        package = Path(tmp) / "tierlog"
        package.mkdir()
        for folder in FOLDERS:
            (package / folder).symlink_to(ROOT / folder, target_is_directory=True)
        packages = [arg for folder in FOLDERS for arg in ("-p", f"tierlog.{folder}")]
        command = [sys.executable, "-m", "mypy", "--strict", *packages, *sys.argv[1:]]
        return subprocess.call(command, cwd=ROOT, env={"MYPYPATH": tmp, "PATH": ""})


if __name__ == "__main__":
    raise SystemExit(main())
