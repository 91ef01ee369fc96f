"""Imports point down the layers (events < training < export < stream < riskstream), and no two
modules of one package import each other, directly or round a loop. TYPE_CHECKING imports
count: a cycle in types is still a cycle."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("events", "training", "export", "stream", "riskstream")
RANK = {name: i for i, name in enumerate(LAYERS)}


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _sources() -> dict[str, Path]:
    return {_module(f): f for pkg in LAYERS for f in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(path: Path, known: set[str]) -> set[str]:
    """Modules `path` imports by absolute name: `from a.b import c` is `a.b.c` when that is
    a module of ours, else `a.b`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            subs = {f"{node.module}.{a.name}" for a in node.names} & known
            found.update(subs or {node.module})
    return found


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    sources = _sources()
    known = set(sources)
    edges: dict[str, set[str]] = defaultdict(set)
    upward = []
    for mod, path in sources.items():
        pkg = mod.split(".")[0]
        for name in _imports(path, known):
            top = name.split(".")[0]
            if top in RANK and RANK[top] > RANK[pkg]:
                upward.append(f"{mod} imports {name} (layer {top} is above {pkg})")
            if top == pkg and name != mod and name in known:
                edges[mod].add(name)
    return edges, upward


def _cycles(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    def reaches(start: str, goal: str) -> bool:
        seen, todo = {start}, [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    pairs = {(min(a, b), max(a, b)) for a in edges for b in edges[a] if reaches(b, a)}
    return sorted(pairs)


def test_imports_point_down_the_layers() -> None:
    _, upward = _graph()
    assert upward == []


def test_no_import_cycles_inside_a_package() -> None:
    edges, _ = _graph()
    assert _cycles(edges) == []


def test_the_checker_sees_an_upward_import_and_a_cycle(tmp_path: Path) -> None:
    # The checks above pass on an empty graph too: show they would catch what they look for.
    bad = tmp_path / "bad.py"
    bad.write_text("from riskstream.dev import dev_addresses\nimport stream.processor\n")
    found = _imports(bad, {"riskstream.dev", "stream.processor"})
    assert found == {"riskstream.dev", "stream.processor"}
    loop = {"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}}
    assert _cycles(loop) == [("a.x", "a.y"), ("a.x", "a.z"), ("a.y", "a.z")]
    assert _cycles({"a.x": {"a.y"}, "a.y": {"a.z"}}) == []


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_has_modules(layer: str) -> None:
    assert any(m.split(".")[0] == layer for m in _sources())
