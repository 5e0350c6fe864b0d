"""No import cycle between edgeagent's packages and top-level modules (issue 12), and no feature
module imports the CLI. The graph is read from the source with ast: every import, including
the lazy ones inside functions (they still bind the two packages together); imports under
``if TYPE_CHECKING:`` are types only and left out."""

import ast
import os
from typing import Dict, List, Set

from tests.conftest import REPO

PACKAGE = os.path.join(REPO, "edgeagent")


def _unit(module: str) -> str:
    """edgeagent.labels.command -> labels; edgeagent.cli -> cli."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _modules() -> Dict[str, str]:
    out = {}
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d not in ("__pycache__", "demo", "proto")]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str, path: str) -> Set[str]:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found: Set[str] = set()
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(base + "." + a.name for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m == "edgeagent" or m.startswith("edgeagent.")}


def module_graph() -> Dict[str, Set[str]]:
    modules = _modules()
    return {m: {i for i in imports_of(m, p) if i in modules} for m, p in modules.items()}


def unit_graph() -> Dict[str, Set[str]]:
    graph: Dict[str, Set[str]] = {}
    for module, targets in module_graph().items():
        if module == "edgeagent":
            continue
        edges = graph.setdefault(_unit(module), set())
        edges.update(_unit(t) for t in targets if t != "edgeagent" and _unit(t) != _unit(module))
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One cycle as a path [a, b, ..., a], or [] when there is none."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def walk(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = walk(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = walk(node)
            if cycle:
                return cycle
    return []


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_graph_sees_lazy_and_relative_imports():
    graph = module_graph()
    assert "edgeagent.labels.component" in graph["edgeagent.app"]      # inside a function
    assert "edgeagent.invocation" in graph["edgeagent.cli"]


def test_no_cycle_between_packages():
    cycle = find_cycle(unit_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_no_feature_imports_the_cli():
    importers = sorted(m for m, targets in module_graph().items()
                       if "edgeagent.cli" in targets and m != "edgeagent.__main__")
    assert importers == []
