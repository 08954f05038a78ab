"""Benchmark of exported models (ONNX, LiteRT) and Keras models on one data set.

`benchmark(models, x, y)` measures, for each model: batch-1 latency
(p50/p95/p99), batch-N throughput, file size, parameter count, accuracy
(when labels are given) and argmax agreement with a reference model. Every
model gets the same warm-up, and the repeats are interleaved (model A, B, C,
A, B, C, ...) so that noise from other jobs on the machine is shared.
onnxruntime session options are set explicitly and reported.

Keras models run through a `tf.function`-compiled call, never
`model.predict`: its per-call overhead (~70 ms on the machine this was
written on) hid a 12x teacher/student difference as 1.1x at batch 1.

`compare(teacher, student, x_test, y_test, out_dir)` is the whole
deployment pipeline: export both to ONNX with the parity gate, quantize the
student to int8, benchmark everything and write the report.
"""

import json
import os

import numpy as np

from kdkeras import _runtime
from kdkeras import export as _export
from kdkeras._io import atomic_write_text

load_runner = _runtime.load_runner


def _count_params(runner):
    if runner.kind == "keras":
        return int(runner.model.count_params())
    if runner.kind == "onnx":
        onnx = _runtime.require("onnx")
        proto = onnx.load(runner.path, load_external_data=False)
        # Weights only: float and int8 tensors; int64/int32 initializers are
        # shapes and axes that tf2onnx adds.
        kinds = {
            onnx.TensorProto.FLOAT,
            onnx.TensorProto.FLOAT16,
            onnx.TensorProto.DOUBLE,
            onnx.TensorProto.INT8,
        }
        return int(
            sum(
                int(np.prod(t.dims))
                for t in proto.graph.initializer
                if t.data_type in kinds
            )
        )
    return None


def _file_size(runner):
    if runner.path is None:
        return None
    return _export.file_digest(runner.path)[0]


def _named(models):
    if isinstance(models, dict):
        return list(models.items())
    named = []
    for i, m in enumerate(models):
        if isinstance(m, (str, os.PathLike)):
            name = os.path.basename(os.fspath(m).rstrip("/"))
        else:
            name = getattr(m, "name", None) or f"model_{i}"
        named.append((name, m))
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise ValueError(
            "Expected distinct model names; pass a dict {name: model}. "
            f"Received: names={names}"
        )
    return named


def _expected_shapes(runner, x):
    """Per-input shapes the runner expects (None for free dimensions)."""
    free = lambda d: None if not isinstance(d, (int, np.integer)) or d < 0 else int(d)  # noqa: E731
    if runner.kind == "onnx":
        return [[free(d) for d in i.shape] for i in runner.session.get_inputs()]
    if runner.kind == "tflite":
        return [
            [free(d) for d in detail["shape_signature"]]
            for detail in runner._inputs
        ]
    if runner.kind == "keras":
        return [list(s.shape) for s in _export.input_specs(runner.model, x)]
    return None


def check_data_fits(name, runner, x):
    """Raises a one-line `ValueError` when `x` does not fit the model."""
    expected = _expected_shapes(runner, x)
    if expected is None:
        return
    if len(expected) != len(x):
        raise ValueError(
            f"Expected {len(expected)} input array(s) for model {name!r}. "
            f"Received: {len(x)} array(s)"
        )
    for shape, arr in zip(expected, x):
        got = tuple(arr.shape)
        if len(shape) != len(got) or any(
            e is not None and e != g for e, g in zip(shape[1:], got[1:])
        ):
            want = ", ".join("?" if d is None else str(d) for d in shape[1:])
            raise ValueError(
                f"Expected inputs shaped (batch, {want}) for model {name!r}. "
                f"Received: data shape={got}"
            )


def benchmark(
    models,
    x,
    y=None,
    *,
    reference=None,
    batch_size=64,
    calls=20,
    repeats=5,
    warmup=5,
    threads=None,
    max_eval_samples=None,
    safe_mode=True,
):
    """Measures latency, throughput, size, accuracy and agreement.

    Args:
        models: a list of paths (`.onnx`, `.tflite`, `.keras`, SavedModel
            folders) and/or Keras models, or a dict `{name: model}`.
        x: inputs, an array or list of arrays (one per model input).
        y: integer labels, for accuracy. Defaults to `None`.
        reference: the name of the model whose predictions the others are
            compared to. Defaults to the first model.
        batch_size: the throughput batch size. Defaults to `64`.
        calls: timed batch-1 calls per model per repeat. Defaults to `20`.
        repeats: interleaved rounds. Defaults to `5`.
        warmup: untimed calls per model and batch size. Defaults to `5`.
        threads: onnxruntime / LiteRT threads. Defaults to all cores.
        safe_mode: Keras's safe mode for `.keras` files; `False` only for
            trusted files that hold code (`Lambda` layers). Defaults to
            `True`.
        max_eval_samples: use at most this many samples for accuracy and
            agreement. Defaults to all.

    Returns:
        A list of `dict`s, one per model: `name`, `kind`, `path`,
        `file_size_bytes`, `params`, `latency_ms` (`p50`, `p95`, `p99`,
        `mean`), `throughput_per_s`, `batch_size`, `accuracy`,
        `agreement`, `reference`, `settings` (runtime options).
    """
    named = _named(models)
    if not named:
        raise ValueError("Expected at least one model. Received: models=[]")
    x = _runtime.as_input_list(x)
    if max_eval_samples is not None:
        x = [a[:max_eval_samples] for a in x]
        y = None if y is None else np.asarray(y)[:max_eval_samples]
    names = [n for n, _ in named]
    reference = names[0] if reference is None else reference
    if reference not in names:
        raise ValueError(
            f"Expected reference to be one of {names}. "
            f"Received: reference={reference!r}"
        )
    runners = [load_runner(m, threads=threads, safe_mode=safe_mode) for _, m in named]
    for (name, _), runner in zip(named, runners):
        check_data_fits(name, runner, x)

    predictions = []
    for (name, _), runner in zip(named, runners):
        try:
            predictions.append(_runtime.run_batched(runner, x, batch_size)[0])
        except Exception as e:  # noqa: BLE001 - one line for the CLI
            raise ValueError(
                f"Expected model {name!r} to run on the data (shape "
                f"{tuple(x[0].shape)}): {type(e).__name__}: "
                f"{' '.join(str(e).split())[:200]}. Received: model={name!r}"
            ) from e
    ref_pred = predictions[names.index(reference)].argmax(-1)

    one = _runtime.take(x, 0, 1)
    lat = _runtime.interleaved_timings(
        runners, one, calls=calls, repeats=repeats, warmup=warmup
    )
    batch = _runtime.take(x, 0, batch_size)
    thr = _runtime.interleaved_timings(
        runners,
        batch,
        calls=max(2, calls // 4),
        repeats=repeats,
        warmup=max(1, warmup // 2),
    )

    results = []
    for i, ((name, _), runner) in enumerate(zip(named, runners)):
        ms = 1e3 * lat[i]
        pred = predictions[i].argmax(-1)
        results.append(
            {
                "name": name,
                "kind": runner.kind,
                "path": runner.path,
                "file_size_bytes": _file_size(runner),
                "params": _count_params(runner),
                "latency_ms": {
                    "p50": float(np.percentile(ms, 50)),
                    "p95": float(np.percentile(ms, 95)),
                    "p99": float(np.percentile(ms, 99)),
                    "mean": float(np.mean(ms)),
                },
                "batch_size": int(len(batch[0])),
                "throughput_per_s": float(len(batch[0]) / np.median(thr[i])),
                "accuracy": (
                    None
                    if y is None
                    else float(np.mean(pred == np.asarray(y).reshape(-1)))
                ),
                "agreement": float(np.mean(pred == ref_pred)),
                "reference": reference,
                "num_samples": int(len(x[0])),
                "timed_calls": int(len(lat[i])),
                "settings": runner.settings(),
            }
        )
    return results


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def format_table(results, markdown=False):
    """The results as a text table (or a Markdown table)."""
    header = [
        "model",
        "kind",
        "size KB",
        "params",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        f"batch-{results[0]['batch_size'] if results else 'N'} /s",
        "accuracy",
        "agreement",
    ]
    rows = [
        [
            r["name"],
            r["kind"],
            _fmt(
                None if r["file_size_bytes"] is None else r["file_size_bytes"] / 1024,
                ".1f",
            ),
            _fmt(r["params"], ","),
            _fmt(r["latency_ms"]["p50"], ".3f"),
            _fmt(r["latency_ms"]["p95"], ".3f"),
            _fmt(r["latency_ms"]["p99"], ".3f"),
            _fmt(r["throughput_per_s"], ",.0f"),
            _fmt(r["accuracy"], ".4f"),
            _fmt(r["agreement"], ".4f"),
        ]
        for r in results
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join("---" for _ in header) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def write_json(results, path, extra=None):
    """Writes `{"results": results, **extra}` to `path` atomically."""
    payload = {"results": results, **(extra or {})}
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return os.fspath(path)


def _by_name(results):
    return {r["name"]: r for r in results}


def compare(
    teacher,
    student,
    x_test,
    y_test,
    out_dir,
    *,
    calibration_data=None,
    quantize="static",
    opset=_export.DEFAULT_OPSET,
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
        A `dict`: `results` (from `benchmark`), `manifests` (by artifact),
        `ratios` (`student_vs_teacher_onnx_p50`, `onnx_vs_keras_p50`,
        `int8_size_ratio`, `int8_agreement`, `int8_vs_float_batch`) and
        `report`, `json`, `plot` paths.

    Raises:
        ParityError: an export or the int8 model fails its gate.

    Example:

    ```python
    out = kdkeras.bench.compare(teacher, student, x_test, y_test, "deploy",
                                calibration_data=x_train[:256])
    print(out["ratios"])
    ```
    """
    from kdkeras import quantize as _quantize
    from kdkeras import report as _report

    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    x = _runtime.as_input_list(x_test)
    y = np.asarray(y_test)
    manifests = {}
    paths = {}
    for name, model in (("teacher", teacher), ("student", student)):
        path = os.path.join(out_dir, f"{name}.onnx")
        manifests[f"{name}.onnx"] = _export.export(
            model, path, "onnx", sample_inputs=x, opset=opset, threads=threads
        )
        paths[f"{name}.onnx"] = path
    if quantize:
        path = os.path.join(out_dir, "student.int8.onnx")
        manifests["student.int8.onnx"] = _quantize.quantize(
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
    results = benchmark(
        models,
        x,
        y,
        reference="teacher.onnx",
        batch_size=batch_size,
        calls=calls,
        repeats=repeats,
        threads=threads,
    )
    by = _by_name(results)
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
    json_path = write_json(
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
    written = _report.write_report(
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
