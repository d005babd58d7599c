"""docs/architecture.md stays true: imports point one way (down the layers), and nothing imports in a circle."""

import ast
from pathlib import Path

import qkv

SRC = Path(qkv.__file__).parent
# the layers of docs/architecture.md, bottom (0) to top; a module may import its own layer or any below
LAYER = {"errors": 0, "config": 0, "runs": 0, "presets": 0, "version": 0, "tokenizers": 1, "data": 1, "nn": 2,
         "models": 3, "training": 4, "generation": 4, "diffusion": 4, "evaluation": 5, "tasks": 6, "humaneval": 7,
         "explain": 7, "server": 7, "cli": 8,
         "__init__": 9, "__main__": 9}


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
