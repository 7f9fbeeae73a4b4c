"""Dependencies point one way: the core imports no service, the jail only the stdlib.

Imports are read from the source with ``ast`` (every ``import`` statement,
also those inside functions), not from a grep, so a multi-line or relative
import is seen as Python sees it.

The jail's modules are not a declared list: they are found by following the
imports of the two programs the jail runs (``sandbox/jail/launch.py`` starts
:mod:`sandbox.jail.launcher` for a cold run and :mod:`sandbox.jail.zygote`
for a warm slot), so a module becomes subject to the rule the moment the jail
imports it. The same set is checked against what a real ``python -I -S``
loads, so the static reading cannot miss an import made another way.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from pagi import SERVICES

REPO = Path(__file__).resolve().parents[3]

FIRST_PARTY = frozenset(
    path.parent.name for path in REPO.glob("*/__init__.py") if not path.parent.name.startswith(".")
)
"""Every top-level package of the repository (services, core, cli, tests...)."""

CORE_MAY_IMPORT = frozenset({"pagi", "proto"})
"""First-party packages the core may use: itself and the generated wire code."""

JAIL_ENTRIES = ("sandbox.jail.launcher", "sandbox.jail.zygote")
"""The modules the jail's entry script (sandbox/jail/launch.py) runs."""

JAIL_PACKAGE = "sandbox.jail"


@dataclass(frozen=True)
class Import:
    """One imported module name, where it is imported."""

    module: str
    importer: str
    line: int
    parent_only: bool = False
    """``from package import a, b`` where a and b are all modules: the package itself only
    loads as their parent, it gives the importer no name."""

    @property
    def top(self) -> str:
        return self.module.split(".")[0]


def module_file(name: str, root: Path = REPO) -> Path | None:
    """The source of first-party module ``name``, or None when it is not one."""
    base = root.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = REPO) -> list[Import]:
    """Every module the file imports; ``from a import b`` also names ``a.b`` if a module."""
    name = module_name(path, root)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            submodules = [
                f"{target}.{alias.name}" if target else alias.name for alias in node.names
            ]
            submodules = [module for module in submodules if module_file(module, root) is not None]
            parent_only = len(submodules) == len(node.names)
            found.append(Import(target, name, node.lineno, parent_only))
            found += [Import(module, name, node.lineno) for module in submodules]
    return found


def is_stdlib(module: str) -> bool:
    return module.split(".")[0] in sys.stdlib_module_names


def import_closure(entries: tuple[str, ...], root: Path = REPO) -> dict[str, list[Import]]:
    """The first-party modules loading ``entries`` runs (parent packages too), and their imports."""
    closure: dict[str, list[Import]] = {}
    pending = list(entries)
    while pending:
        name = pending.pop()
        if name in closure:
            continue
        path = module_file(name, root)
        assert path is not None, f"{name} is not a module of the repository"
        closure[name] = imports_of(path, root)
        parts = name.split(".")
        pending += [".".join(parts[:end]) for end in range(1, len(parts))]
        pending += [
            found.module
            for found in closure[name]
            if not is_stdlib(found.module) and module_file(found.module, root) is not None
        ]
    return closure


def core_problems(root: Path = REPO) -> list[str]:
    """Imports in ``pagi/`` of a first-party package other than the core's own."""
    forbidden = (
        frozenset(p.parent.name for p in root.glob("*/__init__.py")) | set(SERVICES) | {"cli"}
    ) - CORE_MAY_IMPORT
    return [
        f"{found.importer}:{found.line} imports {found.module}"
        for path in sorted((root / "pagi").rglob("*.py"))
        for found in imports_of(path, root)
        if found.top in forbidden
    ]


def jail_problems(closure: dict[str, list[Import]]) -> list[str]:
    """Imports, by a module the jail loads, of anything but the stdlib and the jail package."""
    allowed_parents = {"sandbox", JAIL_PACKAGE}
    return [
        f"{found.importer}:{found.line} imports {found.module}"
        for imports in closure.values()
        for found in imports
        if not is_stdlib(found.module)
        and not found.module.startswith(JAIL_PACKAGE + ".")
        and found.module not in allowed_parents
    ] + [
        f"{name} is loaded by the jail but is outside {JAIL_PACKAGE}"
        for name in closure
        if name not in allowed_parents and not name.startswith(JAIL_PACKAGE + ".")
    ]


def test_the_core_imports_no_service():
    assert core_problems() == []


CLIENT_LIBRARIES = frozenset({"gateway.client", "gateway.conversation"})
"""The gateway's gRPC client and its message types: what a caller of the gateway imports."""


def test_no_service_imports_another():
    """Shared wire models live in the core; a service reaches another only over the wire."""
    problems = [
        f"{found.importer}:{found.line} imports {found.module}"
        for service in SERVICES
        for path in sorted((REPO / service).rglob("*.py"))
        for found in imports_of(path)
        if found.top in SERVICES and found.top != service and found.module not in CLIENT_LIBRARIES
    ]
    assert problems == []


def test_the_client_libraries_import_no_service_code():
    """What a caller takes from the gateway is its client: proto, the core, and itself."""
    problems = [
        f"{found.importer}:{found.line} imports {found.module}"
        for name in sorted(CLIENT_LIBRARIES)
        for found in imports_of(module_file(name))
        if found.top in FIRST_PARTY
        and found.module not in CLIENT_LIBRARIES
        and found.top not in CORE_MAY_IMPORT
    ]
    assert problems == []


PRINTS_FOR_A_TOOL = frozenset({"sandbox.jail.warm_run"})
"""A warm tool's ``sys.exit("message")`` prints the message, as a fresh interpreter would."""


def test_services_leave_printing_to_the_cli():
    """A service logs; what a person reads on a terminal is the ``pagi`` command's (cli/)."""
    printing = sorted(
        f"{module_name(path)}:{node.lineno}"
        for service in SERVICES
        for path in (REPO / service).rglob("*.py")
        for node in ast.walk(ast.parse(path.read_bytes()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "print"
        and module_name(path) not in PRINTS_FOR_A_TOOL
    )
    assert printing == []


def test_cli_is_not_in_the_core():
    assert not (REPO / "pagi" / "cli.py").exists()
    assert not (REPO / "pagi" / "__main__.py").exists()
    assert "cli" in FIRST_PARTY and set(SERVICES) <= FIRST_PARTY


def test_bench_and_testing_import_no_test_module():
    """bench/ and tests/ share their fakes and stacks through testing/, not each other."""
    problems = [
        f"{found.importer}:{found.line} imports {found.module}"
        for folder in ("bench", "testing")
        for path in sorted((REPO / folder).rglob("*.py"))
        for found in imports_of(path)
        if found.top == "tests"
    ] + [
        f"{found.importer}:{found.line} imports {found.module}"
        for path in sorted((REPO / "tests").rglob("*.py"))
        for found in imports_of(path)
        if found.top == "bench"
    ]
    assert problems == []


def test_the_jail_imports_only_the_stdlib_and_itself():
    closure = import_closure(JAIL_ENTRIES)
    # The walk really reached the layers: an empty closure would pass anything.
    assert {"sandbox.jail", "sandbox.jail.seccomp", "sandbox.jail.mountns"} <= set(closure)
    assert jail_problems(closure) == []


def test_the_service_only_modules_are_outside_the_jail():
    """pyseccomp's compiler, the cgroup manager and the probe's judge run in the service only."""
    closure = set(import_closure(JAIL_ENTRIES))
    assert not {name for name in closure if name.split(".")[:2] == ["sandbox", "host"]}
    # They exist where the rule looks for them: a rename cannot make this pass vacuously.
    for name in ("bpf", "cgroup_service", "probe", "lock_pins"):
        assert module_file(f"sandbox.host.{name}") is not None


def test_the_jail_loads_no_more_than_the_static_reading_finds():
    """A real ``python -I -S`` importing the jail's entries loads the stdlib and the closure."""
    program = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(REPO)!r})
        before = set(sys.modules)
        import {", ".join(JAIL_ENTRIES)}
        print(json.dumps(sorted(set(sys.modules) - before)))
        """
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-I", "-S", "-c", program], capture_output=True, check=True, text=True
        ).stdout
    )
    closure = set(import_closure(JAIL_ENTRIES))
    first_party = [name for name in loaded if name.split(".")[0] in FIRST_PARTY]
    assert set(JAIL_ENTRIES) <= set(first_party)
    assert set(first_party) <= closure
    assert [name for name in loaded if not is_stdlib(name) and name not in closure] == []


# The checks themselves catch what they are for.


def _tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_core_check_sees_absolute_relative_and_late_imports(tmp_path):
    root = _tree(
        tmp_path,
        {
            "pagi/__init__.py": "",
            "pagi/fine.py": "import json\nfrom pagi import auth\nimport proto.x\n",
            "pagi/late.py": "def f():\n    from sandbox.policy import load_policy\n",
            "pagi/sub/__init__.py": "",
            "pagi/sub/deep.py": "from .. import auth\nfrom .near import x\n",
            "pagi/plain.py": "import agent.models as m, bff\n",
            "pagi/cmd.py": "from cli import main\n",
            "sandbox/__init__.py": "",
            "gateway/__init__.py": "",
            "proto/__init__.py": "",
        },
    )
    assert core_problems(root) == [
        "pagi.cmd:1 imports cli",
        "pagi.late:2 imports sandbox.policy",
        "pagi.plain:1 imports agent.models",
        "pagi.plain:1 imports bff",
    ]


def test_jail_check_follows_imports_into_a_third_party_one(tmp_path):
    root = _tree(
        tmp_path,
        {
            "sandbox/__init__.py": "",
            "sandbox/settings.py": "import pydantic\n",
            "sandbox/jail/__init__.py": "import os\nfrom . import layer\n",
            "sandbox/jail/layer.py": "def f():\n    from sandbox.jail import compiler\n",
            "sandbox/jail/compiler.py": "import seccomp\n",
            "sandbox/jail/launcher.py": (
                "from sandbox.jail import layer\nfrom sandbox import settings\n"
            ),
            "sandbox/jail/zygote.py": "import sandbox.jail.launcher\n",
        },
    )
    closure = import_closure(JAIL_ENTRIES, root)
    assert set(closure) == {
        "sandbox",
        "sandbox.jail",
        "sandbox.jail.layer",
        "sandbox.jail.compiler",
        "sandbox.jail.launcher",
        "sandbox.jail.zygote",
        "sandbox.settings",
    }
    assert sorted(jail_problems(closure)) == [
        "sandbox.jail.compiler:1 imports seccomp",
        "sandbox.jail.launcher:2 imports sandbox.settings",
        "sandbox.settings is loaded by the jail but is outside sandbox.jail",
        "sandbox.settings:1 imports pydantic",
    ]
