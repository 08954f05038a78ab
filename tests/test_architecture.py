"""The package's shape, checked on its source: layers, cycles, private names, public API."""

import ast
import importlib
import pathlib
import re

import numpy as np
import pytest

import kdkeras
from kdkeras.utils import keras_compat

PACKAGE = pathlib.Path(kdkeras.__file__).parent
ROOT = PACKAGE.parent
COMPAT = "kdkeras.utils.keras_compat"

# Which part may import which (by the first two name components).
FORBIDDEN = {
    "kdkeras.utils": ("kdkeras.",),  # utils imports nothing else from kdkeras
    "kdkeras.losses": ("kdkeras.distill", "kdkeras.deploy", "kdkeras.transfer", "kdkeras.cli"),
    "kdkeras.transfer": ("kdkeras.distill", "kdkeras.deploy", "kdkeras.losses", "kdkeras.cli"),
    "kdkeras.deploy": ("kdkeras.distill", "kdkeras.losses", "kdkeras.transfer", "kdkeras.cli"),
    "kdkeras.distill": ("kdkeras.deploy", "kdkeras.transfer", "kdkeras.cli"),
}


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources():
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name, sources):
    return sources[name].name == "__init__.py"


def _imports(name, tree, sources):
    """Every kdkeras module a module imports (module-level and inside functions)."""
    found = set()
    package = name if _is_package(name, sources) else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("kdkeras"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("kdkeras"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in sources else base)
    return {m for m in found if m in sources and m != name}


def _import_graph():
    sources = _sources()
    trees = {name: ast.parse(path.read_text()) for name, path in sources.items()}
    return {name: _imports(name, trees[name], sources) for name in sources}, trees


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return result


def _private_uses(name, tree):
    """`(line, text)` of private names a module reads from other modules."""
    package = name.rsplit(".", 1)[0]
    own = set()  # private names this module defines (functions, classes, attributes)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                # A private module of one's own subpackage (transfer/_graph) is shared
                # on purpose; a private name inside another module is not.
                if private and node.module != package:
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
        elif isinstance(node, ast.Attribute):
            attr = node.attr
            if not attr.startswith("_") or attr.startswith("__") or attr in own:
                continue
            value = node.value
            if isinstance(value, ast.Name) and value.id in ("self", "cls"):
                continue
            if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "super":
                continue
            found.append((node.lineno, f"{ast.unparse(value)}.{attr}"))
    return found


def test_no_import_cycle():
    graph, _ = _import_graph()
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_parts_import_only_what_the_design_allows():
    graph, _ = _import_graph()
    offenders = {}
    for name, imported in graph.items():
        part = ".".join(name.split(".")[:2])
        banned = FORBIDDEN.get(part, ())
        bad = sorted(
            m for m in imported if any(m.startswith(b) for b in banned) and not m.startswith(part)
        )
        if bad:
            offenders[name] = bad
    assert offenders == {}


def test_no_module_reads_another_modules_private_names():
    _, trees = _import_graph()
    offenders = {
        name: uses
        for name, tree in trees.items()
        if name != COMPAT and (uses := _private_uses(name, tree))
    }
    assert offenders == {}, (
        "Make shared names public inside their subpackage; Keras internals go "
        f"through {COMPAT}. Found: {offenders}"
    )


def test_private_name_scanner_catches_cross_module_access():
    tree = ast.parse("import x\nfrom kdkeras.other import _hidden\ny = x._secret\nz = self._mine\n")
    uses = _private_uses("kdkeras.distill.some", tree)
    assert [line for line, _ in uses] == [2, 3]


def test_every_public_module_lists_its_names():
    missing = []
    for name, path in _sources().items():
        if any(part.startswith("_") for part in name.split(".")):
            continue  # private modules (kdkeras/_startup.py, transfer/_graph.py)
        tree = ast.parse(path.read_text())
        targets = [
            t.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            for t in node.targets
            if isinstance(t, ast.Name)
        ]
        if "__all__" not in targets:
            missing.append(name)
            continue
        module = importlib.import_module(name)
        for public in module.__all__:
            assert hasattr(module, public) or name == "kdkeras", (name, public)
    assert missing == []


def test_top_level_names_resolve():
    for public in kdkeras.__all__:
        assert getattr(kdkeras, public) is not None, public


def test_installed_keras_is_in_the_declared_range():
    pyproject = (ROOT / "pyproject.toml").read_text()
    low, high = re.search(r'"keras>=(\d+\.\d+),<(\d+\.\d+)"', pyproject).groups()
    declared = tuple(tuple(int(p) for p in v.split(".")) for v in (low, high))
    assert declared == keras_compat.KERAS_RANGE
    first, last_exclusive = keras_compat.KERAS_RANGE
    assert first <= keras_compat.keras_version() < last_exclusive


def test_compat_readers_see_what_keras_holds():
    import keras

    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2, name="d")(inputs))
    model.compile("sgd", "mse")
    assert [layer.name for layer in keras_compat.flatten_layers(model)] == ["x", "d"]
    assert keras_compat.inputs_struct(model) is inputs
    assert keras_compat.inbound_node_count(model.get_layer("d")) == 1
    y = np.ones((2, 2), "float32")
    assert float(keras_compat.compiled_loss(model)(y, y * 3.0)) == pytest.approx(4.0)

    class Sub(keras.Model):
        def call(self, x):
            return x * 2.0

    sub = Sub()
    sub(np.ones((1, 5), "float32"))
    assert list(keras_compat.build_shapes(sub).values()) == [(1, 5)]

    tokens = keras.Input((3,), dtype="int32")
    embedded = keras.Model(tokens, keras.layers.Embedding(4, 2, mask_zero=True)(tokens))
    mask = keras_compat.keras_mask(embedded(np.array([[1, 0, 2]])))
    assert np.asarray(mask).tolist() == [[True, False, True]]
    assert keras_compat.keras_mask(np.ones((1, 3), "float32")) is None
