"""Imports point down the layers, and no two modules of one package import each other, directly
or round a loop. TYPE_CHECKING and function-level imports count: a cycle in types is still a cycle.

The layers, lowest first: events < simulator < training < export < stream < the product
(`riskstream`: the CLI's product commands, review, tools, the dev stack's state file) < the
workshop (`riskstream.localstack`, `.dev`, `.demo`, `.bench`: the embedded local stack, the dev
stack, the demo, the benchmarks) < the entry (`riskstream.command`, `riskstream.__main__`: the
installed command, where the product's commands and the workshop's meet). The product never
imports the workshop.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("events", "simulator", "training", "export", "stream", "riskstream")
LAYERS = ("events", "simulator", "training", "export", "stream", "product", "workshop", "entry")
RANK = {name: i for i, name in enumerate(LAYERS)}
#: Sub-packages of `riskstream` that are the workshop, not the product.
WORKSHOP = ("localstack", "dev", "demo", "bench")
ENTRY = ("riskstream.command", "riskstream.__main__")


def layer(module: str) -> str | None:
    """The layer of a module of ours (None: not ours).

    >>> layer("stream.app"), layer("riskstream.review.cli"), layer("riskstream.dev.stack")
    ('stream', 'product', 'workshop')
    >>> layer("riskstream.command"), layer("numpy")
    ('entry', None)
    """
    parts = module.split(".")
    if parts[0] != "riskstream":
        return parts[0] if parts[0] in RANK else None
    if module in ENTRY:
        return "entry"
    return "workshop" if len(parts) > 1 and parts[1] in WORKSHOP else "product"


def _module(path: Path, root: Path = ROOT) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def _sources(root: Path = ROOT) -> dict[str, Path]:
    return {_module(f, root): f for pkg in PACKAGES for f in sorted((root / pkg).rglob("*.py"))}


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


def _graph(root: Path = ROOT) -> tuple[dict[str, set[str]], list[str]]:
    """Imports between modules of one package (for the cycle check), and every import of a
    module in a higher layer, in words."""
    sources = _sources(root)
    known = set(sources)
    edges: dict[str, set[str]] = defaultdict(set)
    upward = []
    for mod, path in sources.items():
        pkg, here = mod.split(".")[0], layer(mod)
        assert here is not None
        for name in _imports(path, known):
            there = layer(name)
            if there is not None and RANK[there] > RANK[here]:
                upward.append(f"{mod} imports {name} (layer {there} is above {here})")
            if name.split(".")[0] == pkg and name != mod and name in known:
                edges[mod].add(name)
    return edges, sorted(upward)


def _subpackage_edges(root: Path = ROOT) -> dict[str, set[str]]:
    """Which sub-packages of `riskstream` import which (`riskstream.review` → `riskstream.tools`);
    the top-level modules count as `riskstream` itself."""
    sources = _sources(root)
    known = set(sources)

    def sub(module: str) -> str:
        return ".".join(module.split(".")[:2]) if module.count(".") >= 1 else module

    def is_package(module: str) -> bool:
        return (root / Path(*module.split(".")) / "__init__.py").exists()

    edges: dict[str, set[str]] = defaultdict(set)
    for mod, path in sources.items():
        if not mod.startswith("riskstream.") or not is_package(sub(mod)):
            continue
        for name in _imports(path, known):
            if name.startswith("riskstream.") and is_package(sub(name)) and sub(name) != sub(mod):
                edges[sub(mod)].add(sub(name))
    return edges


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


def test_no_import_cycles_between_the_sub_packages() -> None:
    # e.g. riskstream.dev (its CLI) and riskstream.tools (the stack's addresses) once did.
    edges = _subpackage_edges()
    assert "riskstream.tools" in edges.get("riskstream.dev", set())  # the check sees edges
    assert _cycles(edges) == []


def test_the_product_imports_nothing_of_the_workshop() -> None:
    # The count the issue asked for: 14 product → workshop import edges before, none now.
    _, upward = _graph()
    assert [u for u in upward if "layer workshop is above product" in u] == []


def test_the_checker_sees_an_upward_import_and_a_cycle(tmp_path: Path) -> None:
    # The checks above pass on an empty graph too: show they would catch what they look for.
    bad = tmp_path / "bad.py"
    bad.write_text("from riskstream.dev import dev_addresses\nimport stream.processor\n")
    found = _imports(bad, {"riskstream.dev", "stream.processor"})
    assert found == {"riskstream.dev", "stream.processor"}
    loop = {"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}}
    assert _cycles(loop) == [("a.x", "a.y"), ("a.x", "a.z"), ("a.y", "a.z")]
    assert _cycles({"a.x": {"a.y"}, "a.y": {"a.z"}}) == []


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_checker_fails_on_a_fake_upward_import_in_a_tree(tmp_path: Path) -> None:
    # A product module that takes something from the dev stack, a workshop module and the
    # entry importing the product (allowed), a stream module importing the product (not).
    _tree(tmp_path, {
        "stream/__init__.py": "", "stream/app.py": "from riskstream.tools import common\n",
        "riskstream/__init__.py": "", "riskstream/command.py": "import riskstream.dev.stack\n",
        "riskstream/review/__init__.py": "",
        "riskstream/review/cli.py": "def f():\n    from riskstream.dev.stack import up\n",
        "riskstream/tools/__init__.py": "", "riskstream/tools/common.py": "import stream.app\n",
        "riskstream/dev/__init__.py": "",
        "riskstream/dev/stack.py": "from riskstream.tools.common import x\n",
    })  # fmt: skip
    _, upward = _graph(tmp_path)
    assert upward == [
        "riskstream.review.cli imports riskstream.dev.stack (layer workshop is above product)",
        "stream.app imports riskstream.tools.common (layer product is above stream)",
    ]
    edges = _subpackage_edges(tmp_path)
    assert edges["riskstream.review"] == {"riskstream.dev"}
    assert _cycles(edges) == []
    _tree(tmp_path, {"riskstream/tools/common.py": "import riskstream.review.cli\n"})
    assert _cycles(_subpackage_edges(tmp_path)) != []  # review → dev → tools → review


@pytest.mark.parametrize("name", LAYERS)
def test_each_layer_has_modules(name: str) -> None:
    assert any(layer(m) == name for m in _sources())
