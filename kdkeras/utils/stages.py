"""Resumable stages: skip work whose inputs have not changed since it finished.

A stage file (JSON, replaced atomically after each stage) records, per stage
name, a digest of the stage's inputs (the settings, and the sha256 of the
files it reads) and the sha256 of each file it wrote. On a rerun a stage is
skipped when its inputs digest is the same and every file it wrote is still
there with the same sha256; otherwise it runs again, and every later stage
whose inputs include its outputs runs again too.
"""

import hashlib
import json
import os

import numpy as np

from kdkeras.utils.atomic import atomic_write_text

__all__ = ["StageFile", "array_digest", "file_sha256", "value_digest"]


def file_sha256(path, chunk=1 << 20):
    """The sha256 of a file, or of a folder's files (names and contents, sorted)."""
    digest = hashlib.sha256()
    path = os.fspath(path)
    if os.path.isdir(path):
        files = sorted(os.path.join(root, f) for root, _, names in os.walk(path) for f in names)
    else:
        files = [path]
    for name in files:
        if os.path.isdir(path):
            digest.update(os.path.relpath(name, path).encode())
        with open(name, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def array_digest(*arrays):
    """The sha256 of NumPy arrays (shapes, dtypes and bytes); `None` entries count too."""
    digest = hashlib.sha256()
    for a in arrays:
        if a is None:
            digest.update(b"none;")
            continue
        a = np.ascontiguousarray(a)
        digest.update(f"{a.shape}{a.dtype};".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def value_digest(value):
    """The sha256 of a JSON-serializable value (keys sorted)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class StageFile:
    """The record of finished stages in one output folder.

    Args:
        path: the JSON file (created on the first `mark_done`).

    Example:

    ```python
    stages = StageFile("out/stages.json")
    inputs = {"model": file_sha256("out/student.keras"), "opset": 17}
    if not stages.is_done("export", inputs):
        export(...)
        stages.mark_done("export", inputs, outputs=["out/student.onnx"])
    ```
    """

    def __init__(self, path):
        self.path = os.fspath(path)

    def _read(self):
        if not os.path.exists(self.path):
            return {}
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return {}  # unreadable: every stage runs again
        return data if isinstance(data, dict) else {}

    def record(self, name):
        """The stored record of stage `name` (a `dict`), or `None`."""
        return self._read().get(name)

    def is_done(self, name, inputs):
        """Whether stage `name` finished with these inputs and its files are unchanged."""
        record = self.record(name)
        if not record or record.get("inputs") != value_digest(inputs):
            return False
        folder = os.path.dirname(self.path)
        for rel, sha in record.get("outputs", {}).items():
            path = os.path.join(folder, rel)
            if not os.path.exists(path) or file_sha256(path) != sha:
                return False
        return True

    def mark_done(self, name, inputs, outputs=(), **extra):
        """Records stage `name` as finished: its inputs digest, its files' sha256, `extra`.

        `outputs` are paths inside the stage file's folder. The file is
        replaced atomically, so a crash leaves the previous record whole.
        """
        folder = os.path.dirname(self.path)
        data = self._read()
        data[name] = {
            "inputs": value_digest(inputs),
            "outputs": {os.path.relpath(p, folder): file_sha256(p) for p in outputs},
            **extra,
        }
        atomic_write_text(self.path, json.dumps(data, indent=2, default=str) + "\n")
