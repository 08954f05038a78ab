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
"""

import json
import os

import numpy as np

from kdkeras.deploy import manifest as manifest_lib
from kdkeras.deploy import runners
from kdkeras.deploy import signatures
from kdkeras.utils import tables
from kdkeras.utils.atomic import atomic_write_text

__all__ = ["benchmark", "check_data_fits", "format_results", "write_json"]


def _count_params(runner):
    if runner.kind == "keras":
        return int(runner.model.count_params())
    if runner.kind == "onnx":
        onnx = runners.require("onnx")
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
            sum(int(np.prod(t.dims)) for t in proto.graph.initializer if t.data_type in kinds)
        )
    return None


def _file_size(runner):
    if runner.path is None:
        return None
    return manifest_lib.file_digest(runner.path)[0]


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
            f"Expected distinct model names; pass a dict {{name: model}}. Received: names={names}"
        )
    return named


def _expected_shapes(runner, x):
    """Per-input shapes the runner expects (None for free dimensions)."""
    free = lambda d: None if not isinstance(d, (int, np.integer)) or d < 0 else int(d)  # noqa: E731
    if runner.kind == "onnx":
        return [[free(d) for d in i.shape] for i in runner.session.get_inputs()]
    if runner.kind == "tflite":
        return [[free(d) for d in detail["shape_signature"]] for detail in runner.input_details]
    if runner.kind == "keras":
        return [list(s.shape) for s in signatures.input_specs(runner.model, x)]
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
    x = runners.as_input_list(x)
    if max_eval_samples is not None:
        x = [a[:max_eval_samples] for a in x]
        y = None if y is None else np.asarray(y)[:max_eval_samples]
    names = [n for n, _ in named]
    reference = names[0] if reference is None else reference
    if reference not in names:
        raise ValueError(
            f"Expected reference to be one of {names}. Received: reference={reference!r}"
        )
    loaded = [runners.load_runner(m, threads=threads, safe_mode=safe_mode) for _, m in named]
    for (name, _), runner in zip(named, loaded):
        check_data_fits(name, runner, x)

    predictions = []
    for (name, _), runner in zip(named, loaded):
        try:
            predictions.append(runners.run_batched(runner, x, batch_size)[0])
        except Exception as e:  # noqa: BLE001 - one line for the CLI
            raise ValueError(
                f"Expected model {name!r} to run on the data (shape "
                f"{tuple(x[0].shape)}): {type(e).__name__}: "
                f"{' '.join(str(e).split())[:200]}. Received: model={name!r}"
            ) from e
    ref_pred = predictions[names.index(reference)].argmax(-1)

    one = runners.take(x, 0, 1)
    lat = runners.interleaved_timings(loaded, one, calls=calls, repeats=repeats, warmup=warmup)
    batch = runners.take(x, 0, batch_size)
    thr = runners.interleaved_timings(
        loaded,
        batch,
        calls=max(2, calls // 4),
        repeats=repeats,
        warmup=max(1, warmup // 2),
    )

    results = []
    for i, ((name, _), runner) in enumerate(zip(named, loaded)):
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
                    None if y is None else float(np.mean(pred == np.asarray(y).reshape(-1)))
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


def format_results(results, markdown=False):
    """The results of `benchmark` as a text table (or a Markdown table)."""
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
    return tables.format_table(rows, header, markdown=markdown)


def write_json(results, path, extra=None):
    """Writes `{"results": results, **extra}` to `path` atomically."""
    payload = {"results": results, **(extra or {})}
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return os.fspath(path)
