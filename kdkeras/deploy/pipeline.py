"""The deployment pipelines: export, parity gate, int8, benchmark, report in one call.

`compare(teacher, student, x_test, y_test, out_dir)` exports both models to
ONNX through the parity gate, quantizes the student to int8, benchmarks
everything with onnxruntime (and the student as a compiled Keras call) and
writes a Markdown report with a plot. `export_file(path, out_dir, ...)` is
`kdkeras export`: a `.keras` file exported through the gate, optionally
quantized, summarised in a `dict`.
"""

import os

import numpy as np

from kdkeras.deploy import bench
from kdkeras.deploy import exporter
from kdkeras.deploy import int8
from kdkeras.deploy import report
from kdkeras.deploy import runners
from kdkeras.deploy import signatures
from kdkeras.deploy.errors import ParityError

__all__ = ["compare", "export_file"]


def compare(
    teacher,
    student,
    x_test,
    y_test,
    out_dir,
    *,
    calibration_data=None,
    quantize="static",
    opset=exporter.DEFAULT_OPSET,
    min_agreement=0.99,
    batch_size=64,
    calls=20,
    repeats=5,
    threads=None,
    title="Teacher vs student: deployment",
    command=None,
):
    """Export, parity gate, int8 quantization, benchmark and report, in one call.

    Writes to `out_dir`: `teacher.onnx`, `student.onnx`,
    `student.int8.onnx` (each with its manifest), `bench.json`,
    `report.md` and `bench.png`. Benchmarks the three ONNX files and the
    student as a `tf.function`-compiled Keras call, on the same held-out
    data, with the float32 teacher as the agreement reference.

    Args:
        teacher: the teacher, a plain Keras model.
        student: the student, a plain Keras model (never a `Distiller`).
        x_test: held-out inputs (array or list of arrays).
        y_test: held-out integer labels.
        out_dir: output folder (created).
        calibration_data: samples for static int8 calibration, ideally from
            the training set. Defaults to the first 256 of `x_test`.
        quantize: `"static"`, `"dynamic"` or `None` (no int8). Defaults to
            `"static"`.
        opset: ONNX opset (at most 18). Defaults to `17`.
        min_agreement: the int8 gate: argmax agreement with the float32
            student on `x_test`. Defaults to `0.99`.
        batch_size: throughput batch size. Defaults to `64`.
        calls: timed batch-1 calls per model per repeat. Defaults to `20`.
        repeats: interleaved rounds. Defaults to `5`.
        threads: runtime threads. Defaults to all cores.
        title: report title.
        command: the command that produced the report, printed in it.

    Returns:
        A `dict`: `results` (from `kdkeras.deploy.benchmark`), `manifests` (by artifact),
        `ratios` (`student_vs_teacher_onnx_p50`, `onnx_vs_keras_p50`,
        `int8_size_ratio`, `int8_agreement`, `int8_vs_float_batch`) and
        `report`, `json`, `plot` paths.

    Raises:
        ParityError: an export or the int8 model fails its gate.

    Example:

    ```python
    out = kdkeras.deploy.compare(teacher, student, x_test, y_test, "deploy",
                                calibration_data=x_train[:256])
    print(out["ratios"])
    ```
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    x = runners.as_input_list(x_test)
    y = np.asarray(y_test)
    manifests = {}
    paths = {}
    for name, model in (("teacher", teacher), ("student", student)):
        path = os.path.join(out_dir, f"{name}.onnx")
        manifests[f"{name}.onnx"] = exporter.export(
            model, path, "onnx", sample_inputs=x, opset=opset, threads=threads
        )
        paths[f"{name}.onnx"] = path
    if quantize:
        path = os.path.join(out_dir, "student.int8.onnx")
        manifests["student.int8.onnx"] = int8.quantize(
            student,
            paths["student.onnx"],
            path,
            mode=quantize,
            calibration_data=(
                calibration_data if calibration_data is not None else [a[:256] for a in x]
            ),
            eval_data=(x, y),
            min_agreement=min_agreement,
            batch_size=batch_size,
            threads=threads,
        )
        paths["student.int8.onnx"] = path
    models = dict(paths)
    models["student (keras)"] = student
    results = bench.benchmark(
        models,
        x,
        y,
        reference="teacher.onnx",
        batch_size=batch_size,
        calls=calls,
        repeats=repeats,
        threads=threads,
    )
    by = {r["name"]: r for r in results}
    p50 = lambda n: by[n]["latency_ms"]["p50"]  # noqa: E731
    ratios = {
        "student_vs_teacher_onnx_p50": p50("teacher.onnx") / p50("student.onnx"),
        "onnx_vs_keras_p50": p50("student (keras)") / p50("student.onnx"),
    }
    if quantize:
        q = manifests["student.int8.onnx"]
        ratios.update(
            {
                "int8_size_ratio": by["student.int8.onnx"]["file_size_bytes"]
                / by["student.onnx"]["file_size_bytes"],
                "int8_agreement": q["parity"]["agreement"],
                "int8_vs_float_batch": by["student.int8.onnx"]["throughput_per_s"]
                / by["student.onnx"]["throughput_per_s"],
            }
        )
    json_path = bench.write_json(
        results,
        os.path.join(out_dir, "bench.json"),
        extra={
            "ratios": ratios,
            "parity": {k: m["parity"] for k, m in manifests.items()},
            "quantization": {
                k: m["quantization"] for k, m in manifests.items() if "quantization" in m
            },
            "command": command,
        },
    )
    written = report.write_report(
        results,
        out_dir,
        title=title,
        command=command,
        ratios=ratios,
        manifests=manifests,
    )
    return {
        "results": results,
        "manifests": manifests,
        "ratios": ratios,
        "json": json_path,
        **written,
    }


_EXTENSIONS = {"onnx": ".onnx", "tflite": ".tflite", "keras": ".keras", "saved_model": ""}
_SUMMARY_QUANTIZATION_KEYS = (
    "mode",
    "quantized_ops",
    "quantizable_ops",
    "size_ratio",
    "accuracy_float32",
    "accuracy_int8",
    "accuracy_change",
    "latency_ratio_batch1",
    "agreement_with_float32",
)


def _summary_entry(manifest):
    p = manifest["parity"]
    entry = {
        "path": manifest["path"],
        "format": manifest["format"],
        "passed": p.get("passed"),
        "gate": p.get("gate"),
        "max_abs_diff": p.get("max_abs_diff"),
        "max_rel_diff": p.get("max_rel_diff"),
        "agreement": p.get("agreement"),
        "atol": p.get("atol"),
        "rtol": p.get("rtol"),
        "min_agreement": p.get("min_agreement"),
        "num_samples": p.get("num_samples"),
        "data": p.get("data"),
        "batch_sizes": p.get("batch_sizes"),
        "file_size_bytes": manifest.get("file_size_bytes"),
        "manifest": manifest.get("manifest_path"),
    }
    q = manifest.get("quantization")
    if q:
        entry["quantization"] = {k: q[k] for k in _SUMMARY_QUANTIZATION_KEYS if k in q}
    return entry


def export_file(
    path,
    out_dir,
    format="onnx",
    *,
    quantize=None,
    train=None,
    test=None,
    safe_mode=True,
    **export_kwargs,
):
    """Exports a `.keras` file into `out_dir` (and quantizes it): `kdkeras export`.

    Args:
        path: the `.keras` file.
        out_dir: the output folder (created).
        format: `"onnx"`, `"tflite"`, `"saved_model"` or `"keras"`.
            Defaults to `"onnx"`.
        quantize: `"static"`, `"dynamic"` (ONNX only) or `None`. Defaults to
            `None`.
        train: calibration inputs for int8 (an array). Needed with `quantize`.
        test: `(x, y)` held-out data: parity samples, and the int8 gate.
            Needed with `quantize`. Defaults to random parity inputs.
        safe_mode: Keras's safe mode for loading `path`. Defaults to `True`.
        **export_kwargs: `opset`, `atol`, `rtol`, `min_agreement`, `batch_sizes`,
            `num_samples` of `kdkeras.deploy.export` (the last two are not
            used by the int8 gate).

    Returns:
        A `dict`: `model`, `passed`, `artifacts` (one entry per file with
        its parity figures), and on failure `error` and `failed_parity`.

    Raises:
        ValueError: bad arguments or data that does not fit the model
            (before anything is written).
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"Expected a Keras model file ending in .keras. Received: model={path!r}")
    if quantize and (train is None or test is None):
        raise ValueError(
            "Expected `train` and `test` data with `quantize`: int8 is "
            "calibrated and checked on real data. Received: data=None"
        )
    if quantize == "dynamic" and format != "onnx":
        raise ValueError(
            f"Expected --format onnx for dynamic quantization. Received: format={format!r}"
        )
    if quantize and format not in ("onnx", "tflite"):
        raise ValueError(
            f"Expected --format onnx or tflite with --quantize. Received: format={format!r}"
        )
    if format == "onnx":
        exporter.validate_opset(export_kwargs.get("opset", exporter.DEFAULT_OPSET))
    model = runners.load_keras(path, safe_mode=safe_mode)
    if test is not None:
        signatures.check_input_shapes(signatures.input_specs(model), [test[0]])
    stem = os.path.splitext(os.path.basename(path))[0]
    os.makedirs(out_dir, exist_ok=True)
    target = os.path.join(out_dir, stem + _EXTENSIONS[format])
    if format == "saved_model":
        target = os.path.join(out_dir, stem + "_saved_model")

    summary = {"model": path, "passed": True, "artifacts": []}
    gate_kwargs = {k: v for k, v in export_kwargs.items() if k in ("min_agreement", "batch_sizes")}
    try:
        summary["artifacts"].append(
            _summary_entry(
                exporter.export(
                    model,
                    target,
                    format,
                    sample_inputs=None if test is None else test[0],
                    safe_mode=safe_mode,
                    **export_kwargs,
                )
            )
        )
        if quantize:
            qpath = os.path.join(out_dir, stem + ".int8" + _EXTENSIONS[format])
            if format == "onnx":
                manifest = int8.quantize(
                    model,
                    target,
                    qpath,
                    mode=quantize,
                    calibration_data=train,
                    eval_data=test,
                    **gate_kwargs,
                )
            else:
                manifest = int8.quantize_tflite(
                    model, qpath, calibration_data=train, eval_data=test, **gate_kwargs
                )
            summary["artifacts"].append(_summary_entry(manifest))
    except ParityError as e:
        summary["passed"] = False
        summary["error"] = " ".join(str(e).split())
        summary["failed_parity"] = e.report
    return summary
