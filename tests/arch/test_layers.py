"""The layering of docs/architecture.md, held by reading every module's imports.

Each module under ``ctxppl/`` belongs to one layer; a module may import modules of its own
layer or of lower ones, never of a higher one, and no two modules may import each other
(at any level: a function-local import is still a dependency). Imports are read with ``ast``,
so nothing is executed.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2] / "ctxppl"

#: Lowest first; a package name stands for every module below it. Keep in step with
#: docs/architecture.md.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("ctxppl._files", "ctxppl._moved", "ctxppl._version", "ctxppl._cache",
              "ctxppl._lru", "ctxppl._programs", "ctxppl._warnings")),
    ("primitives", ("ctxppl._primitives",)),
    ("encoders", ("ctxppl.nn",)),
    ("handlers", ("ctxppl._handlers", "ctxppl.handlers")),
    ("inference", ("ctxppl.infer", "ctxppl.distributed")),
    ("models", ("ctxppl.models",)),
    ("user-facing", ("ctxppl.estimators", "ctxppl.online", "ctxppl.workflow",
                     "ctxppl.datasets")),
    ("analysis", ("ctxppl.analysis",)),
    ("plots", ("ctxppl.plot",)),
    ("command line", ("ctxppl.cli",)),
]
#: ``import ctxppl`` loads the core eagerly (primitives .. inference); the other layers load
#: lazily on attribute access, so importing the root counts as importing the inference layer.
ROOT_LAYER = "inference"


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _layer(module: str) -> int:
    if module == "ctxppl":
        return [name for name, _ in LAYERS].index(ROOT_LAYER)
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for pre in prefixes:
            if module == pre or module.startswith(pre + "."):
                if best is None or len(pre) > best[1]:
                    best = (i, len(pre))
    if best is None:
        raise AssertionError(f"module {module} is in no layer: add it to LAYERS in "
                             f"{__file__} and to docs/architecture.md.")
    return best[0]


def _resolve(name: str) -> str:
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(module: str) -> set[str]:
    """ctxppl modules imported anywhere in ``module`` (top level or inside functions)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(pkg + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                       for a in node.names]
        else:
            continue
        found |= {_resolve(t) for t in targets if t == "ctxppl" or t.startswith("ctxppl.")}
    found.discard(module)
    return found


GRAPH = {m: _imports(m) for m in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_higher_layer(module):
    mine = _layer(module)
    names = [name for name, _ in LAYERS]
    upward = sorted(t for t in GRAPH[module] if _layer(t) > mine and not (
        module == "ctxppl"))  # the root re-exports lazily, checked below
    assert not upward, (f"{module} (layer {names[mine]!r}) imports "
                        + ", ".join(f"{t} (layer {names[_layer(t)]!r})" for t in upward))


def test_root_eagerly_imports_only_the_core():
    tree = ast.parse(MODULES["ctxppl"].read_text())
    eager = set()
    for node in tree.body:  # module level only: the lazy layers are imported in __getattr__
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ctxppl"):
            eager |= {_resolve(f"{node.module}.{a.name}") for a in node.names}
    core = [name for name, _ in LAYERS].index(ROOT_LAYER)
    assert eager and all(_layer(m) <= core for m in eager), sorted(eager)


def test_no_two_modules_import_each_other():
    pairs = sorted({tuple(sorted((a, b))) for a, targets in GRAPH.items() for b in targets
                    if a in GRAPH.get(b, ()) and "ctxppl" not in (a, b)
                    and not (b.startswith(a + ".") or a.startswith(b + "."))})
    assert not pairs, f"modules that import each other: {pairs}"


def test_the_checker_sees_a_violation():
    # the test above must be able to fail: a known upward edge is classified as one
    assert _layer("ctxppl.cli._main") > _layer("ctxppl.infer._fit")
    assert "ctxppl.infer._fit" in GRAPH["ctxppl.infer"]
