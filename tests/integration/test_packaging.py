"""The distribution installs under one root package, ``tierlog``, and nothing else."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE_FOLDERS = ("domain", "projections", "adapters", "client")


@pytest.mark.slow
def test_the_wheel_holds_only_the_tierlog_package_and_every_module(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("tierlog-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {name.split("/")[0] for name in names} == {
        "tierlog",
        wheel.name.split("-py3")[0] + ".dist-info",
    }
    expected = {
        f"tierlog/{path.relative_to(ROOT).as_posix()}"
        for folder in SOURCE_FOLDERS
        for path in (ROOT / folder).rglob("*.py")
    }
    assert expected - names == set(), "modules missing from the wheel"
    # The dashboard's page and static files ship inside the package (no build step).
    ui = ROOT / "adapters" / "http" / "ui"
    assets = {f"tierlog/adapters/http/ui/{p.relative_to(ui).as_posix()}" for p in ui.rglob("*.*")}
    assert "tierlog/adapters/http/ui/index.html" in assets
    assert "tierlog/adapters/http/ui/js/main.js" in assets
    assert assets - names == set(), "dashboard files missing from the wheel"


def test_tierlog_imports_from_its_root_and_the_bare_folders_do_not() -> None:
    code = (
        "import importlib.util, tierlog.domain, tierlog.projections, tierlog.adapters\n"
        "import tierlog.client\n"
        "print([n for n in ('domain', 'projections', 'adapters', 'client')"
        " if importlib.util.find_spec(n) is not None])"
    )
    # Run outside the checkout, so the working directory cannot supply the folders.
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True
    )
    assert done.stdout.strip() == "[]"
