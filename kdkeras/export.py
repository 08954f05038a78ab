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
import hashlib
import json
import os
import platform
import re

import numpy as np

from kdkeras import _io
from kdkeras import _onnx
from kdkeras import _runtime
from kdkeras._io import atomic_path
from kdkeras._io import atomic_write_text

FORMATS = ("keras", "saved_model", "onnx", "tflite")
DEFAULT_OPSET = 17
DEFAULT_ATOL = 1e-4
DEFAULT_BATCH_SIZES = (1, 16)
MANIFEST_SUFFIX = ".manifest.json"


class ParityError(RuntimeError):
    """An exported artifact does not match its Keras model.

    Attributes:
        report: the parity figures (a `dict`), also written to the manifest.
    """

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = {"passed": False, **(report or {})}


def max_onnx_opset():
    """The highest ONNX opset the installed tf2onnx can write."""
    constants = _runtime.require("tf2onnx.constants")
    return max(constants.OPSET_TO_IR_VERSION)


def _validate_opset(opset):
    highest = max_onnx_opset()
    if not isinstance(opset, (int, np.integer)) or not 9 <= opset <= highest:
        raise ValueError(
            f"Expected an ONNX opset between 9 and {highest} (the highest "
            "tf2onnx supports; it fails on anything above). "
            f"Received: opset={opset!r}"
        )
    return int(opset)


def _check_plain_keras(model):
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(
            "Expected a `keras.Model`. "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    layers = [model] + list(
        getattr(model, "_flatten_layers", lambda **k: [])(include_self=False)
    )
    for layer in layers:
        module = type(layer).__module__ or ""
        if module == "kdkeras" or module.startswith("kdkeras."):
            hint = (
                " Export its `student` instead."
                if hasattr(model, "student")
                else ""
            )
            raise ValueError(
                "Expected a plain Keras model: an exported model never "
                "contains a teacher, adapters or any kdkeras object."
                f"{hint} Received: a {type(layer).__name__} "
                f"(from {module}) in model={model.name!r}"
            )


def _sanitize(name, fallback):
    name = re.sub(r"[^A-Za-z0-9_]", "_", str(name or "")).strip("_")
    return name or fallback


def input_specs(model, sample_inputs=None, input_signature=None):
    """The model's inputs as `tf.TensorSpec`s with a dynamic batch size.

    Taken, in order of preference, from `input_signature`, from
    `model.inputs` (functional, Sequential, or loaded from a `.keras` file),
    or from the sample inputs (subclassed models).
    """
    import tensorflow as tf

    if input_signature is not None:
        specs = []
        for i, spec in enumerate(tf.nest.flatten(input_signature)):
            shape = (None,) + tuple(spec.shape)[1:]
            dtype = tf.as_dtype(getattr(spec, "dtype", None) or "float32")
            name = _sanitize(getattr(spec, "name", None), f"input_{i}")
            specs.append(tf.TensorSpec(shape, dtype, name=name))
        return specs
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if inputs:
        return [
            tf.TensorSpec(
                (None,) + tuple(t.shape)[1:],
                tf.as_dtype(t.dtype),
                name=_sanitize(getattr(t, "name", None), f"input_{i}"),
            )
            for i, t in enumerate(inputs)
        ]
    if sample_inputs is not None:
        return [
            tf.TensorSpec(
                (None,) + x.shape[1:], tf.as_dtype(x.dtype), name=f"input_{i}"
            )
            for i, x in enumerate(_runtime.as_input_list(sample_inputs))
        ]
    raise ValueError(
        "Expected `sample_inputs` or `input_signature` for a model without "
        "known inputs (a subclassed model). "
        f"Received: model={type(model).__name__}, sample_inputs=None, "
        "input_signature=None"
    )


def check_input_shapes(specs, inputs):
    """Raises a one-line `ValueError` when data does not fit the model."""
    if len(specs) != len(inputs):
        raise ValueError(
            f"Expected {len(specs)} input array(s) for the model. "
            f"Received: {len(inputs)} array(s)"
        )
    for spec, x in zip(specs, inputs):
        expected = tuple(spec.shape)[1:]
        got = tuple(x.shape[1:])
        if len(expected) != len(got) or any(
            e is not None and e != g for e, g in zip(expected, got)
        ):
            raise ValueError(
                f"Expected inputs shaped (batch, {', '.join(map(str, expected))})"
                f" for model input {spec.name!r}. "
                f"Received: data shape={tuple(x.shape)}"
            )


def _embedding_vocab(model):
    sizes = [
        layer.input_dim
        for layer in getattr(model, "_flatten_layers", lambda **k: [])()
        if hasattr(layer, "input_dim") and isinstance(layer.input_dim, int)
    ]
    return min(sizes) if sizes else 10


def random_inputs(model, specs, n, seed=0):
    """Random inputs for the specs: uniform [0, 1) floats, valid token ids."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in specs:
        shape = (n,) + tuple(d if d is not None else 8 for d in spec.shape[1:])
        dtype = spec.dtype.as_numpy_dtype
        if spec.dtype.is_integer:
            arrays.append(
                rng.integers(0, _embedding_vocab(model), shape).astype(dtype)
            )
        else:
            arrays.append(rng.random(shape).astype(dtype))
    return arrays


def keras_outputs(model, inputs, batch_size=256):
    """The model's inference outputs on a list of arrays, as NumPy arrays."""
    import keras

    def run(chunk):
        out = model(chunk[0] if len(chunk) == 1 else chunk, training=False)
        return [keras.ops.convert_to_numpy(o) for o in keras.tree.flatten(out)]

    n = len(inputs[0])
    parts = [
        run(_runtime.take(inputs, i, min(i + batch_size, n)))
        for i in range(0, n, batch_size)
    ]
    return [np.concatenate(p, axis=0) for p in zip(*parts)]


def parity_figures(reference, outputs):
    """Max absolute difference and argmax agreement between output lists."""
    if len(reference) != len(outputs):
        raise ParityError(
            f"Expected {len(reference)} output(s) from the artifact. "
            f"Received: {len(outputs)}"
        )
    max_diff, agreement = 0.0, None
    for ref, out in zip(reference, outputs):
        if ref.shape != out.shape:
            raise ParityError(
                f"Expected an artifact output shaped {ref.shape}. "
                f"Received: shape={out.shape}"
            )
        ref64, out64 = ref.astype("float64"), out.astype("float64")
        # Non-finite values count as an infinite difference unless both sides
        # hold the same value there (NaN != NaN, so compare NaN masks too):
        # a NaN must never hide a difference elsewhere.
        same_nonfinite = (ref64 == out64) | (np.isnan(ref64) & np.isnan(out64))
        diff = np.where(
            np.isfinite(ref64) & np.isfinite(out64),
            np.abs(ref64 - out64),
            np.where(same_nonfinite, 0.0, np.inf),
        )
        max_diff = max(max_diff, float(np.max(diff)) if diff.size else 0.0)
        if ref.ndim >= 2 and ref.shape[-1] >= 2:
            agree = float(np.mean(ref.argmax(-1) == out.argmax(-1)))
            agreement = agree if agreement is None else min(agreement, agree)
    return max_diff, agreement


def check_parity(
    model,
    runner,
    inputs,
    *,
    batch_sizes=DEFAULT_BATCH_SIZES,
    atol=DEFAULT_ATOL,
    min_agreement=0.99,
    gate="diff",
    reference=None,
    data="given",
):
    """Compares a runner's outputs to the Keras model's at each batch size.

    Args:
        model: the Keras model (the reference).
        runner: an object with `run(list_of_arrays) -> list_of_arrays`, e.g.
            `kdkeras.bench.load_runner(path)`.
        inputs: list of arrays (the samples).
        batch_sizes: the artifact is run in chunks of each of these sizes.
            Defaults to `(1, 16)`.
        atol: the largest absolute difference allowed (`gate="diff"`).
            Defaults to `1e-4`.
        min_agreement: the smallest share of samples whose argmax must
            agree. Defaults to `0.99`.
        gate: `"diff"` (float artifacts: `max_abs_diff <= atol` and
            agreement) or `"agreement"` (quantized artifacts, where the
            difference is expected). Defaults to `"diff"`.
        reference: precomputed Keras outputs for `inputs`. Defaults to
            computing them.
        data: `"given"` or `"random"`, recorded in the report.

    Returns:
        A `dict` of parity figures, with `passed`.
    """
    if not len(inputs) or not len(inputs[0]):
        raise ValueError(
            "Expected at least one sample to check parity on. "
            f"Received: {len(inputs[0]) if len(inputs) else 0} samples"
        )
    if reference is None:
        reference = keras_outputs(model, inputs)
    if not all(np.all(np.isfinite(r)) for r in reference):
        raise ParityError(
            "Expected finite outputs from the Keras model on the parity "
            "samples. Received: NaN or Inf in the reference outputs",
            {"passed": False, "reference_finite": False},
        )
    per_batch = {}
    for bs in batch_sizes:
        outputs = _runtime.run_batched(runner, inputs, int(bs))
        diff, agree = parity_figures(reference, outputs)
        per_batch[str(int(bs))] = {"max_abs_diff": diff, "agreement": agree}
    max_diff = max(v["max_abs_diff"] for v in per_batch.values())
    agreements = [
        v["agreement"] for v in per_batch.values() if v["agreement"] is not None
    ]
    agreement = min(agreements) if agreements else None
    if gate == "agreement" and agreement is None:
        raise ParityError(
            "The agreement gate needs class outputs (last dimension >= 2); "
            "this model has none, so int8 parity cannot be judged by "
            "agreement. Received: output shapes "
            f"{[tuple(r.shape) for r in reference]}",
            {"passed": False, "agreement": None},
        )
    ok_agree = agreement is None or agreement >= min_agreement
    passed = ok_agree and (gate == "agreement" or max_diff <= atol)
    return {
        "passed": bool(passed),
        "gate": gate,
        "max_abs_diff": max_diff,
        "agreement": agreement,
        "atol": atol if gate == "diff" else None,
        "min_agreement": min_agreement,
        "num_samples": int(len(inputs[0])),
        "data": data,
        "batch_sizes": per_batch,
    }


# LiteRT ----------------------------------------------------------------------


def _write_tflite(model, path, specs, calibration=None):
    import tensorflow as tf

    kwargs = {}
    if calibration is not None:
        cal = _runtime.as_input_list(calibration)

        def representative():
            for i in range(len(cal[0])):
                yield [x[i : i + 1] for x in cal]

        kwargs = {
            "optimizations": [tf.lite.Optimize.DEFAULT],
            "representative_dataset": representative,
        }
    arg = [specs[0]] if len(specs) == 1 else [list(specs)]
    with atomic_path(path, suffix=".tflite") as tmp:
        model.export(
            tmp, format="litert", verbose=False, input_signature=arg, **kwargs
        )
    return {
        "route": "keras.Model.export(format='litert')",
        "fixes": [],
        "quantization": "int8 (LiteRT, calibrated)" if kwargs else None,
    }


# Keras / SavedModel ----------------------------------------------------------


def _write_keras(model, path):
    import zipfile

    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp) as z:
            config = z.read("config.json").decode("utf-8")
        if re.search(r'"module":\s*"kdkeras', config):
            raise ValueError(
                "Expected a model without kdkeras objects. "
                f"Received: a config that references kdkeras, path={path!r}"
            )
    return {"route": "keras.Model.save", "fixes": []}


def _write_saved_model(model, path, specs):
    arg = [specs[0]] if len(specs) == 1 else [list(specs)]
    with atomic_path(path, is_dir=True) as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False, input_signature=arg)
    return {"route": "keras.Model.export", "fixes": []}


# Manifest --------------------------------------------------------------------


def failed_path(path):
    """Where an artifact that failed its parity gate is kept: `x.failed.onnx`."""
    root, ext = os.path.splitext(os.fspath(path).rstrip("/"))
    return f"{root}.failed{ext}"


def file_digest(path):
    """`(size in bytes, sha256)` of a file, or of a folder's files."""
    digest, size = hashlib.sha256(), 0
    if os.path.isdir(path):
        files = sorted(
            os.path.join(root, f) for root, _, names in os.walk(path) for f in names
        )
    else:
        files = [path]
    for f in files:
        if os.path.isdir(path):
            digest.update(os.path.relpath(f, path).encode())
        with open(f, "rb") as fh:
            data = fh.read()
        size += len(data)
        digest.update(data)
    return size, digest.hexdigest()


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


def _io_description(runner, specs, reference):
    inputs = [
        {
            "name": getattr(runner, "input_names", None)
            and runner.input_names[i]
            or s.name,
            "shape": [None if d is None else int(d) for d in s.shape],
            "dtype": s.dtype.name,
        }
        for i, s in enumerate(specs)
    ]
    names = getattr(runner, "output_names", None) or [
        f"output_{i}" for i in range(len(reference))
    ]
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


def export(
    model,
    path,
    format="onnx",
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
):
    """Exports a Keras model and checks the artifact against it.

    The artifact is written atomically. It is then loaded in its own runtime
    (onnxruntime, LiteRT, TensorFlow, Keras) and run on `num_samples`
    samples at each of `batch_sizes`; its outputs are compared to the Keras
    model's: max absolute difference (at most `atol`) and argmax agreement
    (at least `min_agreement`). For ONNX, `onnx.checker` runs as well. A
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
            Defaults to `"onnx"`.
        sample_inputs: an array or a list of arrays (one per model input);
            real data is best. Defaults to random inputs (uniform [0, 1)
            floats, valid token ids for integer inputs).
        input_signature: `tf.TensorSpec`s or `keras.InputSpec`s; needed only
            for a subclassed model without `sample_inputs`. The batch
            dimension is always made dynamic.
        opset: the ONNX opset, 9 to 18. Defaults to `17`.
        atol: the largest absolute output difference allowed. Defaults to
            `1e-4` (float32).
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
    manifest = kdkeras.export.export(student, "out/student.onnx",
                                     sample_inputs=x_test)
    print(manifest["parity"]["max_abs_diff"])
    ```
    """
    if format not in FORMATS:
        raise ValueError(
            f"Expected format to be one of {list(FORMATS)}. "
            f"Received: format={format!r}"
        )
    _check_plain_keras(model)
    path = os.fspath(path)
    if format == "onnx":
        opset = _validate_opset(opset)
    if sample_inputs is not None:
        sample_inputs = _runtime.as_input_list(sample_inputs)
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
    staging = _io.staging_path(
        path, is_dir=format == "saved_model", suffix=os.path.splitext(path)[1]
    )
    try:
        if format == "onnx":
            info = _onnx.write_onnx(model, staging, specs, opset, route)
        elif format == "tflite":
            info = _write_tflite(model, staging, specs)
        elif format == "saved_model":
            info = _write_saved_model(model, staging, specs)
        else:
            info = _write_keras(model, staging)
    except BaseException:
        _io.discard(staging)
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
):
    """Loads an artifact, checks parity, writes its manifest; raises on failure.

    Used by `export` and by `kdkeras.quantize` (with `parity_gate=
    "agreement"`). Returns the manifest.

    With `publish_as`, `path` is a staging name: an artifact that passes is
    renamed to `publish_as`; one that fails is kept as `failed_path(
    publish_as)` for inspection, so a failed export never replaces a good
    artifact (nor its manifest).
    """
    samples = _runtime.as_input_list(samples)
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
            onnx = _runtime.require("onnx")
            try:
                onnx.checker.check_model(path)
                report["onnx_checker"] = "passed"
            except Exception as e:  # noqa: BLE001 - recorded, then raised
                report["onnx_checker"] = f"failed: {e}"
                raise ParityError(f"onnx.checker rejected {path}: {e}", report)
        try:
            runner = _runtime.load_runner(path, threads=threads, safe_mode=safe_mode)
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
                final = failed_path(final)
            if os.path.lexists(path):
                _io.publish(path, final)
            path = final
            manifest["path"] = os.path.basename(path.rstrip("/"))
        size, sha = file_digest(path) if os.path.exists(path) else (None, None)
        inputs, outputs = _io_description(runner, specs, reference)
        manifest.update(
            {
                "inputs": inputs,
                "outputs": outputs,
                "opset": opset,
                "parity": report,
                "file_size_bytes": size,
                "sha256": sha,
                "versions": library_versions(),
                "created": datetime.datetime.now(datetime.timezone.utc)
                .isoformat(timespec="seconds"),
                **(extra or {}),
            }
        )
        manifest["manifest_path"] = write_manifest(path, manifest)
        manifest["path"] = path
    if not report["passed"]:
        what = (
            f"max_abs_diff={report.get('max_abs_diff'):.3g} (atol={atol:g}), "
            if parity_gate == "diff"
            else ""
        )
        raise ParityError(
            f"Parity check failed for {path}: expected outputs matching the "
            f"Keras model. Received: {what}agreement={report.get('agreement')}"
            f" (min {min_agreement:g})",
            report,
        )
    return manifest
