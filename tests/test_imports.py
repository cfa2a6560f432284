"""The layering holds: no module of fer imports, at any depth, a module that imports it back, and
the subpackages (data, models, run) do not import each other in a circle either. Every import
counts, function-level ones and ``if TYPE_CHECKING:`` ones too: a cycle hidden from the
interpreter is still two modules that cannot be understood one without the other (the old
fer.training.module <-> fer.inference and fer.data <-> fer.inference cycles were of those kinds)."""

from __future__ import annotations

import ast
from pathlib import Path

import fer

SRC = Path(fer.__file__).parent


def module_name(path: Path) -> str:
    parts = ["fer", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree: ast.AST, modules: set[str]) -> set[str]:
    """The fer modules ``tree`` imports anywhere (``from fer.x import y`` names fer.x.y when that
    is a module, else fer.x)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in modules:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = [p for p in SRC.rglob("*.py") if "conf" not in p.relative_to(SRC).parts]
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports(ast.parse(p.read_text()), modules) - {module_name(p)} for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def package_of(module: str) -> str:
    """fer.data.folder -> fer.data; top-level modules (fer.train) stand for themselves."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import fer.x\ndef f():\n    from fer.y import z\n"
    assert imports(ast.parse(source), {"fer.x", "fer.y", "fer.y.z"}) == {"fer.x", "fer.y.z"}


def test_no_module_imports_itself_through_others() -> None:
    graph = import_graph()
    assert len(graph) > 40 and "fer.vision.images" in graph["fer.data.sources"]
    assert cycles(graph) == []


def test_subpackages_do_not_import_each_other_in_a_circle() -> None:
    graph: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        if module == "fer":  # the package's own __init__ re-exports; every module can reach it
            continue
        graph.setdefault(package_of(module), set()).update(package_of(t) for t in targets if t != "fer")
    for package in graph:
        graph[package].discard(package)
    assert cycles(graph) == []


def test_the_image_module_is_the_bottom_layer() -> None:
    """fer.vision.images is what every layer reads pixels with, so it depends on no other fer module."""
    assert import_graph()["fer.vision.images"] == set()


# The layers in the order README.md's "What is where" lists them: each imports only layers before it.
LAYERS = [
    "fer.vision", "fer.classes", "fer.input_spec", "fer.run", "fer.data", "fer.models", "fer.training",
    "fer.scoring", "fer.packaged", "fer.inference", "fer.plots", "fer.factory", "fer.cli",
]


def upward_imports(graph: dict[str, set[str]], layers: list[str]) -> list[str]:
    """Imports that go from a layer to a later layer or to an entry point (a module in no layer);
    entry points may import anything."""
    rank = {layer: i for i, layer in enumerate(layers)}
    entry = len(layers)
    found = []
    for module, targets in sorted(graph.items()):
        source = rank.get(package_of(module), entry)
        if module == "fer" or source == entry:
            continue
        found += [f"{module} -> {t}" for t in sorted(targets - {"fer"}) if rank.get(package_of(t), entry) > source]
    return found


def test_each_layer_imports_only_the_layers_listed_before_it() -> None:
    planted = {"fer.vision.images": {"fer.data.sources"}, "fer.data.sources": {"fer.vision.images"}, "fer.train": {"fer.data.sources"}}
    assert upward_imports(planted, LAYERS) == ["fer.vision.images -> fer.data.sources"]
    assert upward_imports(import_graph(), LAYERS) == []
