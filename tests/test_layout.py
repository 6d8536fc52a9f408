"""The layout's rules: which package may import which, and no import cycles between modules.

Read from the source with ast (every import, at module level or inside a function), so a lazy
import cannot hide an upward dependency."""
from __future__ import annotations

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]

# The data flow, lowest first: a package may import itself and the packages listed for it.
# model_api is the contract everyone shares and imports nothing of ours; the client must stay
# installable without the training code (and without TensorFlow for its core).
ALLOWED = {
    "model_api": set(),
    "client": {"model_api"},
    "serving": {"model_api"},
    "publishing": {"model_api"},
    "training": {"model_api", "publishing"},
}


def module_files() -> dict[str, pathlib.Path]:
    modules = {}
    for package in ALLOWED:
        for path in sorted((REPO / package).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def imported_modules(path: pathlib.Path, known: dict) -> set[str]:
    """The project modules `path` imports (`from a.b import c` counts as a.b, or a.b.c if that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imported_modules(path, modules) - {name} for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_a_package_above_or_beside_its_own():
    graph = import_graph()
    assert graph, "no modules found: the packages moved?"
    wrong = sorted(f"{module} imports {target}" for module, targets in graph.items() for target in targets
                   if target.split(".")[0] != module.split(".")[0]
                   and target.split(".")[0] not in ALLOWED[module.split(".")[0]])
    assert wrong == []


def test_no_import_cycles_between_modules():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
