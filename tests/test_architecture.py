"""The library's modules import one another without circles, so each can be read and tested from the bottom
up (the layer contracts themselves are checked by ``lint-imports`` in scripts/test.sh)."""

from __future__ import annotations

import grimp


def import_cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Every elementary circle found by a depth-first walk (one per back edge)."""
    cycles: list[list[str]] = []
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module) & modules):
            if state.get(imported) == "open":
                cycles.append(path[path.index(imported):] + [imported])
            elif imported not in state:
                visit(imported)
        path.pop()
        state[module] = "done"

    for module in sorted(modules):
        if module not in state:
            visit(module)
    return cycles


def library_graph() -> tuple[grimp.ImportGraph, set[str]]:
    graph = grimp.build_graph("rag", exclude_type_checking_imports=False)
    packages = {m for m in graph.modules if graph.find_children(m)}
    return graph, set(graph.modules) - packages


def test_no_module_of_the_library_is_part_of_an_import_circle():
    graph, modules = library_graph()
    assert import_cycles(graph, modules) == []


def test_the_circle_check_finds_a_circle():
    graph = grimp.ImportGraph()
    for module in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(module)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.c")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert import_cycles(graph, {"pkg.a", "pkg.b", "pkg.c"}) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
