"""The package's structure: no import cycles, and the public facade reaches every subpackage."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "attnzoo"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere in its code: at the top, and inside functions too
    (a lazy import only hides a cycle, it does not remove it). Imports under ``if TYPE_CHECKING:`` never run
    and are left out, and so is the import of a module's parent packages that Python does on the way."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        stack = [ast.parse(path.read_text(), str(path))]
        while stack:
            node = stack.pop()
            if _is_type_checking(node):
                stack.extend(node.orelse)
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                targets = []
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
            stack.extend(ast.iter_child_nodes(node))
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan), as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
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
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert {"attnzoo", "attnzoo.registry", "attnzoo.weights.api", "attnzoo.training.cli"} <= set(graph)
    assert "attnzoo.registry" in graph["attnzoo.weights.format"]  # the walk sees imports (sanity)
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_lazy_cycle():
    # The two cycles this test was written against: cli <-> training.cli through a function-level import.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_nothing_inside_the_package_imports_the_facade():
    graph = import_graph()
    assert [name for name, edges in graph.items() if "attnzoo" in edges] == []


def test_every_subpackage_is_an_attribute_of_the_facade():
    # In a fresh interpreter: nothing has imported the subpackages yet.
    code = (
        "import attnzoo\n"
        "assert attnzoo.attention.create('se', 64).channels == 64\n"
        "for name in ('attention', 'backbones', 'bench', 'data', 'training', 'weights', 'registry', 'info'):\n"
        "    assert getattr(attnzoo, name).__name__ == 'attnzoo.' + name, name\n"
        "    assert name in dir(attnzoo), name\n"
        "assert attnzoo.ModelConfig is attnzoo.registry.ModelConfig\n"
        "assert attnzoo.data.ShapesDataModule and attnzoo.training.ImageClassifier and attnzoo.weights.load\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    documented = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    import attnzoo

    assert documented <= set(attnzoo.SUBMODULES)


# The optional parts that may import torchvision: its detectors are what they extend (the `detection` extra).
TORCHVISION_PARTS = ("attnzoo.detection",)


def test_the_package_never_imports_timm_or_torchvision():
    # They are test-time peers (and cannot be installed beside the CPU torch): not even a lazy import, nor
    # importlib with the name spelt out. The bench's peers are built by benchmarks/peers.py. Only
    # attnzoo.detection imports torchvision.
    for name, path in _modules().items():
        optional = any(name == part or name.startswith(part + ".") for part in TORCHVISION_PARTS)
        banned = ("timm",) if optional else ("timm", "torchvision")
        text = path.read_text()
        for node in ast.walk(ast.parse(text, str(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in banned for n in names), (name, ast.dump(node))
        assert not re.search(r"import_module\(\s*['\"](timm|torchvision)", text), name
