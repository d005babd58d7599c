"""docs/architecture.md stays true: imports point one way (down the floors, one package each), and nothing imports
in a circle."""

import ast
from pathlib import Path

import qkv

SRC = Path(qkv.__file__).parent
# the floors of docs/architecture.md, bottom (0) to top, one package per floor: a module may import its own
# package or any package on a floor below, so an import between two packages is allowed one way only
FLOORS = ["errors", "config", "version", "runs", "presets", "hardware", "tokenizers", "data", "nn", "models",
          "diffusion", "generation", "training", "evaluation", "tasks", "explain", "humaneval", "report", "pipeline",
          "server",
          "cli"]
LAYER = {name: floor for floor, name in enumerate(FLOORS)} | {"__init__": len(FLOORS), "__main__": len(FLOORS)}


def _imports() -> dict[str, set[str]]:
    """module (dotted, under qkv) -> the qkv modules it imports, at the top or inside functions."""
    out = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qkv."):
                deps.add(node.module.removeprefix("qkv."))
        out[name] = deps
    return out


def test_every_module_is_in_a_layer():
    assert {name.split(".")[0] for name in _imports()} <= set(LAYER)


def test_imports_point_down_the_layers():
    upward = [f"{m} -> {d}" for m, deps in _imports().items() for d in deps
              if LAYER[d.split(".")[0]] > LAYER[m.split(".")[0]]]
    assert not upward, upward


def test_no_import_cycle_between_modules():
    graph = {m: {d.removesuffix(".__init__") for d in deps} for m, deps in _imports().items()}
    graph = {m.removesuffix(".__init__"): deps for m, deps in graph.items()}
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(m, path):
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join([*path, m]))
        if state.get(m) == 2 or m not in graph:
            return
        state[m] = 1
        for d in sorted(graph[m]):
            visit(d, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        visit(m, [])


def test_architecture_doc_draws_the_floors_the_test_enforces():
    """docs/architecture.md's drawing lists the packages from the top floor down, one per line, as FLOORS."""
    import re

    doc = (SRC.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    drawing = doc.split("```", 2)[1]
    drawn = [m.group(2) for m in re.finditer(r"^\s*(\d+)\s+([a-z_]+)/?", drawing, flags=re.M)]
    assert drawn == FLOORS[::-1], drawn
