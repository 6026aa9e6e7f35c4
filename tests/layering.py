"""The layering contract, and a small AST checker that holds the source tree to it.

The rules below are the contract, written as data: who may import what among tierlog's
own modules. The checker reads every module of the three source folders under the name
it installs as (``domain/x.py`` is ``tierlog.domain.x``), collects every import in it
(at module level, inside functions, under ``if TYPE_CHECKING``, relative ones too) and
reports each import that breaks a rule, with the file and line, and each import cycle.
Imports of anything outside ``tierlog`` are not its business, and an import by name at
run time (``importlib.import_module``) is not seen.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

# Each source folder and the package it installs as.
SOURCES = {
    "domain": "tierlog.domain",
    "projections": "tierlog.projections",
    "adapters": "tierlog.adapters",
    # The client's documented short import: a face over tierlog.adapters.client.
    "client": "tierlog.client",
}

# Modules under a prefix may import, of tierlog, only modules under these prefixes.
# (Checked from the most specific prefix: the routes' rule is the one that applies to a
# route, not the adapters' one.)
MAY_IMPORT_ONLY: dict[str, tuple[str, ...]] = {
    # The domain is pure: nothing of the outer layers.
    "tierlog.domain": ("tierlog.domain",),
    # Read models are folds of domain events.
    "tierlog.projections": ("tierlog.domain", "tierlog.projections"),
    # A route translates a request; what it needs reaches it through the dependencies.
    "tierlog.adapters.http.routes": (
        "tierlog.adapters.http.deps",
        "tierlog.adapters.http.models",
        "tierlog.domain",
    ),
    # The short import re-exports the client library, and nothing else.
    "tierlog.client": ("tierlog.adapters.client",),
    # The client library speaks HTTP only: none of the server's code comes with it.
    "tierlog.adapters.client": ("tierlog.adapters.client",),
}

# Modules under a prefix may be imported only by these modules (and by themselves).
MAY_BE_IMPORTED_ONLY_BY: dict[str, tuple[str, ...]] = {
    # The app is assembled once, by whatever runs it: the server or the composition root.
    "tierlog.adapters.http.app": ("tierlog.adapters.http.serve", "tierlog.adapters.bootstrap"),
    # The app includes the routers (the composition root may import anything of adapters).
    "tierlog.adapters.http.routes": ("tierlog.adapters.http.app", "tierlog.adapters.bootstrap"),
}

# And no import cycle among tierlog modules (see ``cycle_violations``), imports inside
# functions included: a cycle hidden behind a function-level import is still a cycle.


@dataclass(frozen=True)
class Import:
    """One import of a tierlog module, where it is written."""

    importer: str
    imported: str
    path: Path
    line: int


@dataclass(frozen=True)
class Violation:
    """One import that breaks the contract, and which rule it breaks."""

    path: Path
    line: int
    importer: str
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.imported} ({self.rule})"


def modules(root: Path) -> dict[str, Path]:
    """Every module of the source folders under ``root``, by its installed name."""
    found: dict[str, Path] = {}
    for folder, package in SOURCES.items():
        base = root / folder
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def imports(root: Path) -> list[Import]:
    """Every import of a tierlog module in the source folders under ``root``."""
    known = modules(root)
    return [found for name, path in known.items() for found in _imports_of(name, path, known)]


def _imports_of(name: str, path: Path, known: Mapping[str, Path]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            targets = _from_targets(name, is_package, node, known)
        else:
            continue
        for target in targets:
            if target == "tierlog" or target.startswith("tierlog."):
                yield Import(name, target, path, node.lineno)


def _from_targets(
    name: str, is_package: bool, node: ast.ImportFrom, known: Mapping[str, Path]
) -> list[str]:
    """The modules a ``from ... import ...`` reaches: a submodule when a name is one."""
    base = node.module or ""
    if node.level:
        # ``from . import x`` in a module is relative to its package; in a package's
        # ``__init__`` to the package itself.
        anchor = name.split(".")
        drop = node.level - 1 if is_package else node.level
        anchor = anchor[: len(anchor) - drop]
        base = ".".join([*anchor, base] if base else anchor)
    # One import line naming several things of one module is one import of it.
    reached = (f"{base}.{alias.name}" for alias in node.names)
    return list(dict.fromkeys(target if target in known else base for target in reached))


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _most_specific(module: str, prefixes: Iterable[str]) -> str | None:
    matching = [prefix for prefix in prefixes if _under(module, prefix)]
    return max(matching, key=len) if matching else None


def rule_violations(found: Iterable[Import]) -> list[Violation]:
    """The imports that break ``MAY_IMPORT_ONLY`` or ``MAY_BE_IMPORTED_ONLY_BY``."""
    broken: list[Violation] = []
    for imp in found:
        layer = _most_specific(imp.importer, MAY_IMPORT_ONLY)
        if layer is not None:
            allowed = MAY_IMPORT_ONLY[layer]
            if not any(_under(imp.imported, prefix) for prefix in allowed):
                rule = f"{layer} may import only {', '.join(allowed)}"
                broken.append(Violation(imp.path, imp.line, imp.importer, imp.imported, rule))
        guarded = _most_specific(imp.imported, MAY_BE_IMPORTED_ONLY_BY)
        if guarded is not None and not _under(imp.importer, guarded):
            importers = MAY_BE_IMPORTED_ONLY_BY[guarded]
            if imp.importer not in importers:
                rule = f"{guarded} may be imported only by {', '.join(importers)}"
                broken.append(Violation(imp.path, imp.line, imp.importer, imp.imported, rule))
    return broken


def cycle_violations(found: Iterable[Import]) -> list[Violation]:
    """A cycle through each module that is on one, import by import (each cycle once)."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in found:
        if imp.importer != imp.imported:
            edges.setdefault(imp.importer, {}).setdefault(imp.imported, imp)
    broken: list[Violation] = []
    for group in _strongly_connected(edges):
        covered: set[str] = set()
        for start in sorted(group):
            if start in covered:
                continue
            cycle = _cycle_within(start, group, edges)
            covered.update(imp.importer for imp in cycle)
            names = " -> ".join([*(imp.importer for imp in cycle), start])
            broken.extend(
                Violation(imp.path, imp.line, imp.importer, imp.imported, f"import cycle: {names}")
                for imp in cycle
            )
    return broken


def _strongly_connected(edges: Mapping[str, Mapping[str, Import]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative; only the groups of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, {}))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(group)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, {})))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return groups


def _cycle_within(
    start: str, group: set[str], edges: Mapping[str, Mapping[str, Import]]
) -> list[Import]:
    """The imports of a shortest cycle from ``start`` back to it, inside ``group``."""
    came_by: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child, imp in sorted(edges.get(node, {}).items()):
                if child == start:
                    path = [imp]
                    while path[0].importer != start:
                        path.insert(0, came_by[path[0].importer])
                    return path
                if child in group and child not in came_by:
                    came_by[child] = imp
                    following.append(child)
        frontier = following
    raise AssertionError(f"{start} is in a strongly connected group but on no cycle")


def check(root: Path) -> list[Violation]:
    """Every breach of the contract in the source folders under ``root``."""
    found = imports(root)
    return rule_violations(found) + cycle_violations(found)


def packages(root: Path) -> set[str]:
    """Every package (a folder with ``__init__.py``) of the source folders, by installed name."""
    return {name for name, path in modules(root).items() if path.name == "__init__.py"}
