"""The manifest JSON written beside every artifact."""

import json
import os
import platform

from kdkeras.utils.atomic import atomic_write_text
from kdkeras.utils.stages import file_sha256

__all__ = [
    "MANIFEST_SUFFIX",
    "failed_path",
    "file_digest",
    "io_description",
    "library_versions",
    "write_manifest",
]

MANIFEST_SUFFIX = ".manifest.json"


def failed_path(path):
    """Where an artifact that failed its parity gate is kept: `x.failed.onnx`."""
    root, ext = os.path.splitext(os.fspath(path).rstrip("/"))
    return f"{root}.failed{ext}"


def file_digest(path):
    """`(size in bytes, sha256)` of a file, or of a folder's files (`stages.file_sha256`)."""
    if os.path.isdir(path):
        size = sum(
            os.path.getsize(os.path.join(root, f))
            for root, _, names in os.walk(path)
            for f in names
        )
    else:
        size = os.path.getsize(path)
    return size, file_sha256(path)


def library_versions():
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for name in (
        "kdkeras",
        "numpy",
        "tensorflow",
        "keras",
        "tf2onnx",
        "onnx",
        "onnxruntime",
    ):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return versions


def io_description(runner, specs, reference):
    inputs = [
        {
            "name": getattr(runner, "input_names", None) and runner.input_names[i] or s.name,
            "shape": [None if d is None else int(d) for d in s.shape],
            "dtype": s.dtype.name,
        }
        for i, s in enumerate(specs)
    ]
    names = getattr(runner, "output_names", None) or [f"output_{i}" for i in range(len(reference))]
    outputs = [
        {
            "name": names[i] if i < len(names) else f"output_{i}",
            "shape": [None] + [int(d) for d in ref.shape[1:]],
            "dtype": str(ref.dtype),
        }
        for i, ref in enumerate(reference)
    ]
    return inputs, outputs


def write_manifest(path, manifest):
    """Writes `manifest` as `<path>.manifest.json`; returns that path."""
    manifest_path = os.fspath(path).rstrip("/") + MANIFEST_SUFFIX
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return manifest_path
