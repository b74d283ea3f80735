"""The layers of the package and their directions (docs/architecture.md), read from the source.

    definitions/, errors, plugins (registries)        -- the floor
    engines/, offline/, online/                       -- plugins
    workspace                                         -- typed stores + engines
    materialize, publishing, operations, migration, retrieval/   -- services
    project                                           -- the public face
    loader, serve, integrations/, cli/, the root      -- entry points

Plugins never import services, ``workspace`` or ``project``; services never import
``project``; only the entry points import ``project``. No ``_private`` name crosses a
module line, and module-level first-party imports form no cycle.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mlforge"

PLUGINS = ("mlforge.engines", "mlforge.offline", "mlforge.online")
SERVICES = ("mlforge.materialize", "mlforge.publishing", "mlforge.operations", "mlforge.migration", "mlforge.retrieval", "mlforge.scoring")
ENTRY_POINTS = ("mlforge", "mlforge.loader", "mlforge.serve", "mlforge.integrations", "mlforge.cli", "mlforge.__main__")
OPTIONAL = ("pyspark", "redis", "valkey", "boto3", "botocore", "databricks", "fastapi", "uvicorn", "mlflow", "polars", "deltalake", "google", "prometheus_client", "rich", "cyclopts")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(path: Path) -> list[tuple[str, list[str], bool, int]]:
    """``(module, names, module_level_at_runtime, line)`` for every first-party import."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: list[tuple[str, list[str], bool, int]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for inner in child.body:
                    visit_one(inner, top=False, typing_only=True)
                for inner in child.orelse:
                    visit_one(inner, top=top, typing_only=False)
            else:
                visit_one(child, top=top, typing_only=False)

    def visit_one(node: ast.AST, top: bool, typing_only: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mlforge":
                    found.append((alias.name, [], top and not typing_only, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] == "mlforge":
                names = [a.name for a in node.names]
                found.append((base, names, top and not typing_only, node.lineno))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.If, ast.Try, ast.With, ast.For, ast.While)):
            visit(node, top=top and isinstance(node, (ast.If, ast.Try, ast.With)))

    visit(tree, top=True)
    return found


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def edges() -> list[tuple[str, str, list[str], bool, int]]:
    """``(importer, imported, names, module_level_at_runtime, line)`` with ``from pkg import mod``
    resolved to the submodule it names."""
    modules = all_modules()
    out = []
    for name, path in modules.items():
        for target, names, runtime, line in imports(path):
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            for sub in subs:
                out.append((name, sub, [], runtime, line))
            plain = [n for n in names if f"{target}.{n}" not in modules]
            if plain or not names:
                out.append((name, target, plain, runtime, line))
    return out


def test_the_source_tree_is_read():
    modules = all_modules()
    assert {"mlforge.project", "mlforge.workspace", "mlforge.materialize", "mlforge.engines.base", "mlforge.offline.local"} <= set(modules)
    assert len(edges()) > 100


def test_plugins_import_no_service_workspace_or_project():
    bad = [
        f"{src}:{line} imports {dst}"
        for src, dst, _, _, line in edges()
        if _under(src, PLUGINS) and (_under(dst, SERVICES) or _under(dst, ("mlforge.project", "mlforge.workspace", "mlforge.loader", "mlforge.serve", "mlforge.cli", "mlforge.integrations")) or dst == "mlforge")
    ]
    assert not bad, "plugins (engines/, offline/, online/) must not import services or the project:\n" + "\n".join(bad)


def test_services_never_import_the_public_face():
    bad = [f"{src}:{line} imports {dst}" for src, dst, _, _, line in edges() if _under(src, (*SERVICES, "mlforge.workspace")) and (_under(dst, ("mlforge.project", "mlforge.loader", "mlforge.serve", "mlforge.cli", "mlforge.integrations")) or dst == "mlforge")]
    assert not bad, "services take a Workspace, never Definitions:\n" + "\n".join(bad)


def test_only_entry_points_import_project():
    bad = [f"{src}:{line}" for src, dst, _, _, line in edges() if dst == "mlforge.project" and not _under(src, ENTRY_POINTS) and src != "mlforge"]
    assert not bad, "only loader, serve, integrations, cli and the package root import mlforge.project:\n" + "\n".join(bad)


def test_definitions_stand_on_the_floor():
    floor = ("mlforge.definitions", "mlforge.errors", "mlforge.plugins")
    bad = [f"{src}:{line} imports {dst}" for src, dst, _, _, line in edges() if _under(src, ("mlforge.definitions",)) and not _under(dst, floor)]
    assert not bad, "definitions/ imports only definitions, errors and the plugin registries:\n" + "\n".join(bad)


def test_no_private_name_crosses_a_module_line():
    bad = [
        f"{src}:{line} takes {n} from {dst}"
        for src, dst, names, _, line in edges()
        for n in names
        if n.startswith("_") and not (n.startswith("__") and n.endswith("__")) and dst != src
    ]
    assert not bad, "\n".join(bad)


def test_module_level_imports_form_no_cycle():
    graph: dict[str, set[str]] = {}
    for src, dst, _, runtime, _ in edges():
        if runtime and dst != src:
            graph.setdefault(src, set()).add(dst)
    cycles = _cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            strongconnect(node)
    return found


_PROBE = re.compile(r"\b(hasattr|getattr)\(\s*(self\.)?(store|engine|engine_obj|offline_store|online_store|defs|definitions|workspace|eng)\b")


def test_no_ability_of_a_store_or_engine_is_probed():
    bad = [f"{p.relative_to(SRC.parent)}:{i}: {line.strip()}" for p in SRC.rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1) if _PROBE.search(line)]
    assert not bad, "declare the ability (capabilities) instead of probing it:\n" + "\n".join(bad)


def test_engine_names_are_declared_once():
    from mlforge.engines import engine_class
    from mlforge.plugins import ENGINE_NAMES

    spelled = [p for p in SRC.rglob("*.py") if re.search(r"""["']duckdb["'],\s*["']polars["'],\s*["']pyspark["']""", p.read_text())]
    assert [p.name for p in spelled] == ["plugins.py"], spelled
    assert [engine_class(n).name for n in ENGINE_NAMES] == list(ENGINE_NAMES)


def test_import_mlforge_loads_no_optional_package():
    code = (
        "import sys, mlforge\n"
        "mlforge.Definitions, mlforge.LocalStore, mlforge.feature, mlforge.Sum\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({OPTIONAL!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"importing mlforge loaded optional packages: {out}"


@pytest.mark.parametrize("module", ["mlforge.engines.base", "mlforge.offline.local", "mlforge.online.memory"])
def test_plugin_modules_import_on_their_own(module):
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
