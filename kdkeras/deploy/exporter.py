"""Export of a plain Keras model, with a parity gate and a manifest.

`export(model, path, format=...)` writes a `.keras` file, a SavedModel, an
ONNX file or a LiteRT (`.tflite`) file, then runs the artifact against the
Keras model on sample inputs (real data when given, random otherwise) at two
batch sizes. A failed gate raises `ParityError`; a manifest JSON is written
beside the artifact either way (`<artifact>.manifest.json`).

Traps handled (measured with TF 2.21 / Keras 3.15 / tf2onnx 1.17 /
onnxruntime 1.32), each with a test in `tests/test_export.py`:

1. Exact GELU lowers to the TensorFlow op `Erfc`, which tf2onnx copies into
   the ONNX file unconverted on every route (it logs an error and carries
   on). The file is rewritten with `Erfc(x) = 1 - Erf(x)` (difference ~1e-6).
2. `model.export(format="onnx")` raises "never called" for a model straight
   from `load_model()`: an explicit input signature is always passed.
3. tf2onnx 1.17 knows opsets up to 18: higher values are refused up front.

This module never imports kdkeras's distiller or losses: it works on any
plain Keras model, and refuses models that contain kdkeras objects.
"""

import datetime
import os

import numpy as np

from kdkeras.deploy import keras_file
from kdkeras.deploy import litert
from kdkeras.deploy import manifest as manifest_lib
from kdkeras.deploy import onnx as onnx_format
from kdkeras.deploy import runners
from kdkeras.deploy import saved_model
from kdkeras.deploy.errors import ParityError
from kdkeras.deploy.parity import DEFAULT_ATOL
from kdkeras.deploy.parity import DEFAULT_BATCH_SIZES
from kdkeras.deploy.parity import DEFAULT_RTOL
from kdkeras.deploy.parity import check_parity
from kdkeras.deploy.parity import keras_outputs
from kdkeras.deploy.signatures import check_input_shapes
from kdkeras.deploy.signatures import check_plain_keras
from kdkeras.deploy.signatures import input_specs
from kdkeras.deploy.signatures import random_inputs
from kdkeras.utils import atomic

__all__ = [
    "DEFAULT_OPSET",
    "FORMATS",
    "export",
    "format_for_path",
    "gate",
    "max_onnx_opset",
    "validate_opset",
]

FORMATS = ("keras", "saved_model", "onnx", "tflite")
DEFAULT_OPSET = 17
_EXTENSION_FORMATS = {".onnx": "onnx", ".tflite": "tflite", ".keras": "keras"}


def format_for_path(path, format=None):
    """The export format for `path`: `format` checked against the extension, or inferred.

    `.onnx`, `.tflite` and `.keras` name their format; any other path (a
    folder) is a SavedModel. A `format` that contradicts the extension is
    refused before any work, so that `model.tflite` never holds an ONNX file.

    Raises:
        ValueError: an unknown `format`, or one the extension contradicts.
    """
    if format is not None and format not in FORMATS:
        raise ValueError(
            f"Expected format to be one of {list(FORMATS)} or None (inferred from "
            f"the path). Received: format={format!r}"
        )
    path = os.fspath(path)
    ext = os.path.splitext(path.rstrip("/"))[1].lower()
    implied = _EXTENSION_FORMATS.get(ext)
    if format is None:
        return implied or "saved_model"
    if implied is not None and implied != format:
        raise ValueError(
            f"Expected a path ending in the extension of format={format!r} "
            f"(or format={implied!r} for this path, or format=None to infer "
            f"it). Received: path={path!r}, format={format!r}"
        )
    return format


def max_onnx_opset():
    """The highest ONNX opset the installed tf2onnx can write."""
    constants = runners.require("tf2onnx.constants")
    return max(constants.OPSET_TO_IR_VERSION)


def validate_opset(opset):
    highest = max_onnx_opset()
    if not isinstance(opset, (int, np.integer)) or not 9 <= opset <= highest:
        raise ValueError(
            f"Expected an ONNX opset between 9 and {highest} (the highest "
            "tf2onnx supports; it fails on anything above). "
            f"Received: opset={opset!r}"
        )
    return int(opset)


def export(
    model,
    path,
    format=None,
    *,
    sample_inputs=None,
    input_signature=None,
    opset=DEFAULT_OPSET,
    atol=DEFAULT_ATOL,
    min_agreement=0.99,
    batch_sizes=DEFAULT_BATCH_SIZES,
    num_samples=32,
    route="auto",
    threads=None,
    seed=0,
    safe_mode=True,
    rtol=DEFAULT_RTOL,
):
    """Exports a Keras model and checks the artifact against it.

    The artifact is written atomically. It is then loaded in its own runtime
    (onnxruntime, LiteRT, TensorFlow, Keras) and run on `num_samples`
    samples at each of `batch_sizes`; its outputs are compared to the Keras
    model's: max absolute difference (at most `atol`), max difference
    relative to the output scale (`max|ref - out| / max|ref|`, at most
    `rtol`) and argmax agreement (at least `min_agreement`). For ONNX, `onnx.checker` runs as well. A
    manifest JSON (`<path>.manifest.json`) records inputs and outputs,
    format, opset, parity figures, file size, sha256 and library versions;
    it is written even when the gate fails, with `"passed": false`.

    Args:
        model: a plain `keras.Model` (functional, Sequential, subclassed or
            loaded from a file). Models containing kdkeras objects (a
            `Distiller`, adapters) are refused: export the student.
        path: the artifact path (`.keras`, `.onnx`, `.tflite`, or a folder
            for `"saved_model"`).
        format: `"onnx"`, `"tflite"`, `"saved_model"` or `"keras"`.
            Defaults to `None`: inferred from the extension (`.onnx`,
            `.tflite`, `.keras`; anything else is a SavedModel folder). A
            format the extension contradicts is refused before any work.
        sample_inputs: an array or a list of arrays (one per model input);
            real data is best. Defaults to random inputs (uniform [0, 1)
            floats, valid token ids for integer inputs).
        input_signature: `tf.TensorSpec`s or `keras.InputSpec`s; needed only
            for a subclassed model without `sample_inputs`. The batch
            dimension is always made dynamic.
        opset: the ONNX opset, 9 to 18. Defaults to `17`.
        atol: the largest absolute output difference allowed for outputs
            up to unit scale; above it, `atol * max|ref|` (float32 rounding
            grows with the magnitude). Defaults to `1e-4`.
        rtol: the largest output difference allowed relative to the output
            scale, `max|ref - out| / max|ref|`. Defaults to `1e-3`.
        min_agreement: the smallest argmax agreement allowed. Defaults to
            `0.99`.
        batch_sizes: the parity check runs at each. Defaults to `(1, 16)`.
        num_samples: how many samples the check uses. Defaults to `32`.
        route: ONNX only: `"keras"` (`Model.export`), `"saved_model"`
            (tf2onnx on a SavedModel) or `"auto"` (the first that works).
            Defaults to `"auto"`.
        threads: runtime threads for the check. Defaults to all cores.
        seed: seed of the random inputs. Defaults to `0`.
        safe_mode: Keras's safe mode when the `.keras` artifact is loaded
            back for the check; `False` only for trusted models that hold
            code (`Lambda` layers). Defaults to `True`.

    Returns:
        The manifest (a `dict`), with `"path"` and `"manifest_path"`.

    Raises:
        ParityError: the artifact does not match the model, or (ONNX) the
            checker or onnxruntime rejects it.
        ValueError: bad arguments (format, opset above 18, a kdkeras
            object, data that does not fit the model).
        ImportError: the `export` extra is missing.

    Example:

    ```python
    manifest = kdkeras.deploy.export(student, "out/student.onnx",
                                     sample_inputs=x_test)
    print(manifest["parity"]["max_abs_diff"])
    ```
    """
    path = os.fspath(path)
    format = format_for_path(path, format)
    check_plain_keras(model)
    if format == "onnx":
        opset = validate_opset(opset)
    if sample_inputs is not None:
        sample_inputs = runners.as_input_list(sample_inputs)
    specs = input_specs(model, sample_inputs, input_signature)
    if sample_inputs is not None:
        check_input_shapes(specs, sample_inputs)
        data = "given"
        samples = [x[:num_samples] for x in sample_inputs]
    else:
        data = "random"
        samples = random_inputs(model, specs, num_samples, seed)

    # Built under a staging name and renamed into place only once it passes
    # the gate: a failed export leaves the previous artifact untouched.
    staging = atomic.staging_path(
        path, is_dir=format == "saved_model", suffix=os.path.splitext(path)[1]
    )
    try:
        if format == "onnx":
            info = onnx_format.write_onnx(model, staging, specs, opset, route)
        elif format == "tflite":
            info = litert.write_litert(model, staging, specs)
        elif format == "saved_model":
            info = saved_model.write_saved_model(model, staging, specs)
        else:
            info = keras_file.write_keras(model, staging)
    except BaseException:
        atomic.discard(staging)
        raise

    return gate(
        model,
        staging,
        format,
        samples,
        specs=specs,
        data=data,
        info=info,
        opset=opset if format == "onnx" else None,
        atol=atol,
        rtol=rtol,
        min_agreement=min_agreement,
        batch_sizes=batch_sizes,
        threads=threads,
        safe_mode=safe_mode,
        publish_as=path,
    )


def gate(
    model,
    path,
    format,
    samples,
    *,
    specs=None,
    data="given",
    info=None,
    opset=None,
    atol=DEFAULT_ATOL,
    min_agreement=0.99,
    batch_sizes=DEFAULT_BATCH_SIZES,
    threads=None,
    parity_gate="diff",
    extra=None,
    safe_mode=True,
    publish_as=None,
    rtol=DEFAULT_RTOL,
):
    """Loads an artifact, checks parity, writes its manifest; raises on failure.

    Used by `export` and by `kdkeras.deploy.quantize` (with `parity_gate=
    "agreement"`). Returns the manifest.

    With `publish_as`, `path` is a staging name: an artifact that passes is
    renamed to `publish_as`; one that fails is kept as `manifest_lib.failed_path(
    publish_as)` for inspection, so a failed export never replaces a good
    artifact (nor its manifest).
    """
    samples = runners.as_input_list(samples)
    specs = specs or input_specs(model, samples)
    reference = keras_outputs(model, samples)
    report = {"passed": False}
    manifest = {
        "format": format,
        "path": os.path.basename(path.rstrip("/")),
        **(info or {}),
    }
    runner = None
    try:
        if format == "onnx":
            onnx = runners.require("onnx")
            try:
                onnx.checker.check_model(path)
                report["onnx_checker"] = "passed"
            except Exception as e:  # noqa: BLE001 - recorded, then raised
                report["onnx_checker"] = f"failed: {e}"
                raise ParityError(f"onnx.checker rejected {path}: {e}", report) from e
        try:
            runner = runners.load_runner(path, threads=threads, safe_mode=safe_mode)
            report["runtime_load"] = "passed"
        except ValueError as e:
            report["runtime_load"] = f"failed: {e}"
            raise ParityError(str(e), report) from e
        figures = check_parity(
            model,
            runner,
            samples,
            batch_sizes=batch_sizes,
            atol=atol,
            rtol=rtol,
            min_agreement=min_agreement,
            gate=parity_gate,
            reference=reference,
            data=data,
        )
        report.update(figures)
        report["passed"] = figures["passed"]
    finally:
        if publish_as is not None:
            final = os.fspath(publish_as)
            if not report["passed"]:
                final = manifest_lib.failed_path(final)
            if os.path.lexists(path):
                atomic.publish(path, final)
            path = final
            manifest["path"] = os.path.basename(path.rstrip("/"))
        size, sha = manifest_lib.file_digest(path) if os.path.exists(path) else (None, None)
        inputs, outputs = manifest_lib.io_description(runner, specs, reference)
        manifest.update(
            {
                "inputs": inputs,
                "outputs": outputs,
                "opset": opset,
                "parity": report,
                "file_size_bytes": size,
                "sha256": sha,
                "versions": manifest_lib.library_versions(),
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                **(extra or {}),
            }
        )
        manifest["manifest_path"] = manifest_lib.write_manifest(path, manifest)
        manifest["path"] = path
    if not report["passed"]:
        what = (
            f"max_abs_diff={report.get('max_abs_diff'):.3g} (atol={atol:g}, "
            f"bound {report.get('atol_bound') or atol:.3g}), "
            f"max_rel_diff={report.get('max_rel_diff'):.3g} (rtol={rtol:g}, "
            f"output scale {report.get('output_scale'):.3g}), "
            if parity_gate == "diff"
            else ""
        )
        failed = report.get("failed") or []
        bounds = f" [failed: {', '.join(failed)}]" if failed else ""
        raise ParityError(
            f"Parity check failed for {path}{bounds}: expected outputs matching the "
            f"Keras model. Received: {what}agreement={report.get('agreement')}"
            f" (min {min_agreement:g})",
            report,
        )
    return manifest
