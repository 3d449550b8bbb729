"""The package's layers, read from the source: imports point only down, none is circular, modules stay small.

Every import counts, function-level ones too; `if TYPE_CHECKING:` blocks do not (they never run). The task registry
discovers its modules at run time, so it counts as importing every task module.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tf_finetune"
# Bottom to top; a module belongs to the first layer with a prefix of its name. Modules of one layer may import
# each other (without cycles); a module may import any layer below its own, never one above.
LAYERS = [
    ("core", ["tf_finetune.core"]),
    ("hub client", ["tf_finetune.hub"]),
    ("config", ["tf_finetune.config"]),
    ("data, models, metrics", ["tf_finetune.data", "tf_finetune.models", "tf_finetune.metrics"]),
    ("tasks", ["tf_finetune.tasks"]),
    ("runtime", ["tf_finetune.runtime"]),
    ("outputs", ["tf_finetune.outputs"]),
    ("training", ["tf_finetune.training"]),
    ("tuning", ["tf_finetune.tuning"]),
    ("commands", ["tf_finetune.cli", "tf_finetune.train", "tf_finetune.predict", "tf_finetune.push",
                  "tf_finetune.export", "tf_finetune.report", "tf_finetune"]),
]
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer; add it to LAYERS")


def _runtime_nodes(tree: ast.AST):
    """The AST's nodes, without the bodies of `if TYPE_CHECKING:` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def imports_of(module: str) -> set[str]:
    """The package's modules that `module` imports (a `from package import name` of a submodule names it)."""
    tree = ast.parse(MODULES[module].read_text())
    found = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module and name.startswith("tf_finetune"):
                found.add(name)
    if module == "tf_finetune.tasks":  # the registry imports every task module (pkgutil.iter_modules)
        found |= {name for name in MODULES if name.startswith("tf_finetune.tasks.")}
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_module_is_in_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_module_imports_a_layer_above_its_own():
    upward = [f"{module} ({LAYERS[layer_of(module)][0]}) imports {imported} ({LAYERS[layer_of(imported)][0]})"
              for module, imported_modules in GRAPH.items() for imported in sorted(imported_modules)
              if layer_of(imported) > layer_of(module)
              and not (module == "tf_finetune" and imported != "tf_finetune")]  # the package's lazy public API
    assert not upward, "\n".join(upward)


def test_there_are_no_import_cycles():
    cycles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(GRAPH[module]):
            if state.get(imported) == "open":
                cycles.append(" -> ".join(path[path.index(imported):] + [imported]))
            elif imported not in state:
                visit(imported, path + [imported])
        state[module] = "done"

    for module in MODULES:
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_are_small(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module]} has {lines} lines; split it (at most {MAX_LINES})"


def test_the_graph_is_read_from_the_source():
    """The reader sees function-level imports and skips TYPE_CHECKING blocks (else the tests above prove nothing)."""
    assert "tf_finetune.training.run" in GRAPH["tf_finetune.training.pipeline"]
    assert "tf_finetune.models.adapters" in GRAPH["tf_finetune.outputs.model_card"]  # a function-level import
    assert "tf_finetune.training.run" not in GRAPH["tf_finetune.training.baseline"]  # only under TYPE_CHECKING
    assert "tf_finetune.tasks.glue" in GRAPH["tf_finetune.tasks"]
