"""The layering contract (tests/layering.py) holds, and the checker catches each breach."""

from __future__ import annotations

import tomllib
from pathlib import Path

from layering import Violation, check, packages

ROOT = Path(__file__).resolve().parents[2]


def _tree(root: Path, files: dict[str, str]) -> Path:
    """A little source tree: the three folders, each with an ``__init__.py``, and ``files``."""
    for folder in ("domain", "projections", "adapters"):
        (root / folder).mkdir()
        (root / folder / "__init__.py").write_text('"""A package."""\n')
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for package in path.relative_to(root).parents[:-1]:
            if not (root / package / "__init__.py").exists():
                (root / package / "__init__.py").write_text('"""A package."""\n')
        path.write_text(text)
    return root


def _found(violations: list[Violation], root: Path) -> set[tuple[str, int, str, str]]:
    return {(str(v.path.relative_to(root)), v.line, v.importer, v.imported) for v in violations}


def test_the_source_tree_keeps_the_contract() -> None:
    violations = check(ROOT)
    assert not violations, "layering contract broken:\n" + "\n".join(map(str, violations))


def test_each_kind_of_breach_is_reported_with_its_file_and_import(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "domain/rules.py": '"""Rules."""\n\n\ndef f():\n    from tierlog.adapters import cli\n',
            "adapters/cli.py": '"""CLI."""\n',
            "adapters/http/app.py": '"""App."""\n',
            "adapters/http/deps.py": '"""Deps."""\n',
            "adapters/http/routes/things.py": '"""Route."""\nfrom .. import app\n',
            "projections/a.py": '"""A."""\nimport tierlog.projections.b\n',
            "projections/b.py": '"""B."""\n\n\ndef g():\n    from . import a\n',
        },
    )
    violations = check(root)
    route = "adapters/http/routes/things.py"
    assert _found(violations, root) == {
        ("domain/rules.py", 5, "tierlog.domain.rules", "tierlog.adapters.cli"),
        (route, 2, "tierlog.adapters.http.routes.things", "tierlog.adapters.http.app"),
        ("projections/a.py", 2, "tierlog.projections.a", "tierlog.projections.b"),
        ("projections/b.py", 5, "tierlog.projections.b", "tierlog.projections.a"),
    }
    rules = {(str(v.path.relative_to(root)), v.rule) for v in violations}
    assert ("domain/rules.py", "tierlog.domain may import only tierlog.domain") in rules
    only_serve = "tierlog.adapters.http.app may be imported only by tierlog.adapters.http.serve"
    assert any(path == route and rule.startswith(only_serve) for path, rule in rules)
    only_deps = "tierlog.adapters.http.routes may import only tierlog.adapters.http.deps"
    assert any(path == route and rule.startswith(only_deps) for path, rule in rules)
    cycle = "import cycle: tierlog.projections.a -> tierlog.projections.b -> tierlog.projections.a"
    assert ("projections/a.py", cycle) in rules and ("projections/b.py", cycle) in rules
    shown = "\n".join(map(str, violations))
    assert (
        f"{root / 'domain/rules.py'}:5: tierlog.domain.rules imports tierlog.adapters.cli" in shown
    )


def test_allowed_imports_are_not_reported(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "domain/events.py": '"""Events."""\n',
            "projections/queue.py": '"""Q."""\nfrom tierlog.domain import events\n',
            "adapters/http/deps.py": '"""Deps."""\nfrom tierlog.projections import queue\n',
            "adapters/http/models.py": '"""Models."""\n',
            "adapters/http/routes/things.py": (
                '"""Route."""\nfrom tierlog.adapters.http import deps, models\n'
                "from tierlog.domain.events import X\n"
            ),
            "adapters/http/app.py": '"""App."""\nfrom .routes import things\n',
            "adapters/http/serve.py": '"""Serve."""\nfrom tierlog.adapters.http.app import app\n',
            "adapters/bootstrap.py": '"""Root."""\nimport tierlog.adapters.http.app\n',
        },
    )
    assert check(root) == []


def test_every_package_is_listed_in_pyproject() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = packages(ROOT)
    assert not on_disk - listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"
    assert not listed - on_disk, f"listed but not on disk: {sorted(listed - on_disk)}"
