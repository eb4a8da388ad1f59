"""The code's layout holds: no module of the grader imports, directly or through others, one
that imports it back (lazy imports inside functions count too: they only hide a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "autograder"


def _imports() -> dict[str, set[str]]:
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = {node.module for node in ast.walk(ast.parse(path.read_text()))
                       if isinstance(node, ast.ImportFrom) and node.module
                       and node.module.startswith("autograder")}
    return graph


def test_no_module_imports_itself_back() -> None:
    graph = _imports()
    cycles = []

    def visit(start: str, node: str, path: list[str]) -> None:
        for target in sorted(graph.get(node, ())):
            if target == start:
                cycles.append(" -> ".join([*path, start]))
            elif target in graph and target not in path:
                visit(start, target, [*path, target])

    for module in sorted(graph):
        visit(module, module, [module])
    assert not cycles, "\n".join(cycles[:10])
