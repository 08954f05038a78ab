"""Atomic saves: a crash while writing leaves the previous file intact."""

import ast
import json
import os
import pathlib
import zipfile

import keras
import numpy as np
import pytest

import kdkeras
from kdkeras.utils import atomic

PACKAGE = pathlib.Path(kdkeras.__file__).parent


def _leftovers(folder):
    return sorted(p.name for p in pathlib.Path(folder).iterdir() if ".tmp-" in p.name)


def _tiny_model(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


# ------------------------------------------------------------------ _io


def test_write_bytes_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a.bin"
    atomic.atomic_write_bytes(path, b"one")
    atomic.atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert _leftovers(tmp_path) == []


def test_crash_during_write_bytes_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "report.md"
    atomic.atomic_write_text(path, "previous report\n")

    def crash(fd):
        raise OSError("disk full")

    # The bytes are written to the temporary file; the crash comes before
    # the rename.
    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write_text(path, "new report that never lands\n" * 1000)
    assert path.read_text() == "previous report\n"
    assert _leftovers(tmp_path) == []


def test_crash_after_partial_write_keeps_previous(tmp_path):
    path = tmp_path / "manifest.json"
    atomic.atomic_write_text(path, json.dumps({"version": 1}))
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write('{"version": 2, "files": [')
            raise RuntimeError("killed mid-save")
    assert json.loads(path.read_text()) == {"version": 1}
    assert _leftovers(tmp_path) == []


def test_crash_in_a_folder_artifact_keeps_previous(tmp_path):
    path = tmp_path / "saved_model"
    with atomic.atomic_path(path, is_dir=True) as tmp:
        (pathlib.Path(tmp) / "saved_model.pb").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(path, is_dir=True) as tmp:
            (pathlib.Path(tmp) / "saved_model.pb").write_text("v2 partial")
            raise RuntimeError("killed mid-save")
    assert (path / "saved_model.pb").read_text() == "v1"
    assert _leftovers(tmp_path) == []


# ------------------------------------------------------ student .keras


def _crash_on_second_zip_write(monkeypatch):
    """Makes the second member written into any zip archive fail."""
    writestr, open_member = zipfile.ZipFile.writestr, zipfile.ZipFile.open
    calls = {"n": 0}

    def count():
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("killed mid-save")

    def patched_writestr(self, *args, **kwargs):
        count()
        return writestr(self, *args, **kwargs)

    def patched_open(self, name, mode="r", *args, **kwargs):
        if mode == "w":
            count()
        return open_member(self, name, mode, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", patched_writestr)
    monkeypatch.setattr(zipfile.ZipFile, "open", patched_open)
    return calls


def test_crash_while_saving_student_keeps_previous_keras_file(tmp_path, monkeypatch):
    path = tmp_path / "student.keras"
    x = np.ones((2, 3), "float32")
    old = _tiny_model(0)
    with atomic.atomic_path(path, suffix=".keras") as tmp:
        old.save(tmp)
    expected = old.predict(x, verbose=0)

    calls = _crash_on_second_zip_write(monkeypatch)
    with pytest.raises(OSError, match="killed mid-save"):
        with atomic.atomic_path(path, suffix=".keras") as tmp:
            _tiny_model(1).save(tmp)
    assert calls["n"] >= 2
    monkeypatch.undo()

    assert _leftovers(tmp_path) == []
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)


def test_crash_during_keras_export_keeps_previous(tmp_path, monkeypatch):
    export = pytest.importorskip("kdkeras.deploy")
    path = tmp_path / "student.keras"
    x = np.ones((2, 3), "float32")
    old = _tiny_model(0)
    export.export(old, path, format="keras", num_samples=2, batch_sizes=(1,))
    expected = old.predict(x, verbose=0)

    _crash_on_second_zip_write(monkeypatch)
    with pytest.raises(OSError, match="killed mid-save"):
        export.export(_tiny_model(1), path, format="keras", num_samples=2, batch_sizes=(1,))
    monkeypatch.undo()

    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
    assert _leftovers(tmp_path) == []


# ------------------------------------------------------------ backups


def _distiller():
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    student = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    distiller = kdkeras.Distiller(teacher, student, kdkeras.LogitsDistillation())
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return distiller


def test_crash_while_writing_a_backup_keeps_the_previous_backup(tmp_path, monkeypatch):
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    y = np.array([0, 1] * 4)
    backup_dir = tmp_path / "backup"
    distiller = _distiller()
    original = keras.Model.save_weights
    saved = {}

    def save_weights(self, filepath, *args, **kwargs):
        saved["n"] = saved.get("n", 0) + 1
        if saved["n"] == 1:
            saved["epoch_1"] = [w.copy() for w in self.student.get_weights()]
            return original(self, filepath, *args, **kwargs)
        with open(filepath, "wb") as f:
            f.write(b"\x89HDF\r\n half a file")
        raise OSError("killed mid-save")

    monkeypatch.setattr(keras.Model, "save_weights", save_weights)
    with pytest.raises(OSError, match="killed mid-save"):
        distiller.fit(
            x,
            y,
            epochs=3,
            batch_size=4,
            verbose=0,
            callbacks=[kdkeras.callbacks.BackupAndRestore(str(backup_dir))],
        )
    monkeypatch.undo()
    assert _leftovers(backup_dir) == []
    state = json.loads((backup_dir / "training_state.json").read_text())
    assert state["epoch"] == 1

    # A fresh process would rebuild the model and call fit again.
    resumed = _distiller()
    resumed.build((None, 3))
    restore = kdkeras.callbacks.BackupAndRestore(str(backup_dir), delete_checkpoint=False)
    restore.set_model(resumed)
    restore.on_train_begin()
    assert resumed._initial_epoch == 1
    for got, want in zip(resumed.student.get_weights(), saved["epoch_1"]):
        np.testing.assert_array_equal(got, want)


# ------------------------------------------ every writer goes through _io

_WRITE_METHODS = {"save", "save_weights", "savefig", "export", "write_text", "write_bytes"}
_WRITE_FUNCTIONS = {("np", "save"), ("np", "savez"), ("shutil", "copy"), ("shutil", "copyfile")}


def _is_atomic_with(node):
    if not isinstance(node, ast.With):
        return False
    for item in node.items:
        call = item.context_expr
        if isinstance(call, ast.Call):
            name = getattr(call.func, "id", None) or getattr(call.func, "attr", None)
            if name in ("atomic_path", "TemporaryDirectory"):
                return True
    return False


def _open_mode(call):
    mode = call.args[1] if len(call.args) > 1 else None
    for kw in call.keywords:
        if kw.arg == "mode":
            mode = kw.value
    return mode.value if isinstance(mode, ast.Constant) else "r"


def _unsafe_writes(source):
    tree = ast.parse(source)
    kdkeras_aliases, buffers = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kdkeras"):
            kdkeras_aliases.update(a.asname or a.name for a in node.names)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            if getattr(func, "attr", None) in ("BytesIO", "StringIO"):
                buffers.update(t.id for t in node.targets if isinstance(t, ast.Name))
    found = []

    def visit(node, atomic):
        if _is_atomic_with(node):
            atomic = True
        if isinstance(node, ast.Call) and not atomic:
            func = node.func
            first = node.args[0] if node.args else None
            # `tmp` is the project's name for a path handed out by atomic_path.
            to_buffer = isinstance(first, ast.Name) and first.id in buffers | {"tmp"}
            to_devnull = isinstance(first, ast.Attribute) and first.attr == "devnull"
            if isinstance(func, ast.Name) and func.id == "open" and not to_devnull:
                if any(c in _open_mode(node) for c in "wax+"):
                    found.append(node.lineno)
            elif isinstance(func, ast.Attribute) and not to_buffer:
                owner = getattr(func.value, "id", None)
                if (owner, func.attr) in _WRITE_FUNCTIONS:
                    found.append(node.lineno)
                elif func.attr in _WRITE_METHODS and owner not in kdkeras_aliases:
                    found.append(node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child, atomic)

    visit(tree, False)
    return found


def test_scanner_catches_a_direct_write():
    assert _unsafe_writes("def f(m, p):\n    m.save(p)\n") == [2]
    assert _unsafe_writes("with open('x', 'w') as f:\n    pass\n") == [1]
    assert _unsafe_writes("with atomic_path(p) as t:\n    m.save(t)\n") == []
    assert _unsafe_writes("import io\nb = io.BytesIO()\nfig.savefig(b)\n") == []


def test_every_kdkeras_writer_goes_through_io():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).as_posix() == "utils/atomic.py":
            continue
        lines = _unsafe_writes(path.read_text())
        if lines:
            offenders[str(path.relative_to(PACKAGE))] = lines
    assert offenders == {}, (
        "Write files with kdkeras.utils.atomic (atomic_path / atomic_write_*). "
        f"Direct writes at: {offenders}"
    )
