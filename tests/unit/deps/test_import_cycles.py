"""No import cycle between first-party modules: each module can be read, and loaded, before
the modules that use it.

The graph is read from the source with ``ast``, as the layering checks read it
(:func:`~tests.unit.deps.test_layering.imports_of`): every ``import`` statement,
at the top of a module or inside a function. An edge goes to the module an
import names; a package's ``__init__`` counts only when a name is taken from
it (``from package import module`` only loads the package as the module's
parent, which is no dependency on what the package defines).
"""

from __future__ import annotations

from pathlib import Path

from tests.unit.deps.test_layering import REPO, _tree, imports_of, module_file, module_name

PACKAGES = ("sandbox", "gateway", "agent", "bff", "memory", "pagi", "cli", "testing")
"""The repository's first-party code (tests and bench only use it)."""


def import_graph(root: Path = REPO, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """First-party module -> the first-party modules it imports."""
    graph: dict[str, set[str]] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            graph[module_name(path, root)] = {
                found.module
                for found in imports_of(path, root)
                if not found.parent_only
                and found.top in packages
                and module_file(found.module, root) is not None
            }
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) through each strongly connected group of modules."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm; the graph is a few hundred modules
        index[module] = lowest[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                lowest[module] = min(lowest[module], lowest[target])
            elif target in on_stack:
                lowest[module] = min(lowest[module], index[target])
        if lowest[module] == index[module]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == module:
                    break
            if len(group) > 1 or module in graph.get(module, ()):
                groups.append(group)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return [_cycle_in(group, graph) for group in groups]


def _cycle_in(group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    pending = [start]
    while pending:
        module = pending.pop(0)
        for target in sorted(graph[module] & group):
            if target == start:
                return [*paths[module], start]
            if target not in paths:
                paths[target] = [*paths[module], target]
                pending.append(target)
    raise AssertionError(f"no cycle through {start}")  # a group always has one


def test_no_import_cycle_between_first_party_modules():
    graph = import_graph()
    # The walk saw the repository: an empty graph would pass anything.
    assert {"sandbox.jail.launcher", "sandbox.jail.zygote", "pagi.auth"} <= set(graph)
    assert [" -> ".join(cycle) for cycle in cycles(graph)] == []


def test_the_check_finds_cycles_through_late_and_relative_imports(tmp_path):
    root = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg import a, b\n",
            "pkg/a.py": "def f():\n    from pkg.b import g\n",
            "pkg/b.py": "from . import c\n",
            "pkg/c.py": "import pkg.a\n",
            "pkg/d.py": "from pkg import LAYERS\n",
            "pkg/e.py": "import pkg.e\n",
            "other/__init__.py": "",
            "other/x.py": "from pkg import a\n",
        },
    )
    graph = import_graph(root, ("pkg", "other"))
    assert graph["other.x"] == {"pkg.a"}  # the package only as the parent of a
    assert graph["pkg.d"] == {"pkg"}  # a name of the package itself
    assert sorted(cycles(graph)) == [
        ["pkg.a", "pkg.b", "pkg.c", "pkg.a"],
        ["pkg.e", "pkg.e"],
    ]
