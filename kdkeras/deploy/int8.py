"""Post-training int8 quantization of an exported model, with a parity gate.

`quantize(model, onnx_path, path, ...)` runs onnxruntime's post-training
quantization on a float32 ONNX file exported by `kdkeras.deploy.export`:

- `"static"`: QDQ, per-channel int8 weights, uint8 activations calibrated
  (MinMax) on samples from the user's data. The default for CNNs.
- `"dynamic"`: int8 weights, activations quantized at run time, restricted
  to `MatMul`/`Gemm`. The default for Transformers and MLPs.

Defaults come from measurements on an x86 CPU with AVX2 and no VNNI: with
plain u8s8 defaults a CNN student's agreement with its float32 self fell to
95.6%; `reduce_range=True` (7-bit weights, no overflow in the u8s8 AVX2
kernels) gave 99.2%, and keeping the logits layer in float32 gave 100%;
static int8 ran 1.4-1.9x faster at 0.26x the size. On an AVX-512 VNNI
machine, the int8 `QLinearConv` on the 1-channel input image took 20x the
float kernel's time and int8 element-wise ops (QLinearAdd/Mul) cost more
than they saved, so the first layer stays float32 and only Conv, MatMul and
Gemm are quantized. `quantize_dynamic` with
its defaults also quantizes convolutions (ConvInteger), which ran 3-4.7x
slower, hence the restriction to MatMul/Gemm.

The gate compares the int8 model with the Keras float32 model on real
held-out data (agreement on random inputs means nothing for int8): argmax
agreement must reach `min_agreement`. The report (in the manifest) gives
the size ratio, latency ratios and the accuracy change against float32.

`quantize_tflite(model, path, ...)` does the same for LiteRT int8.
"""

import os
import platform
import warnings

import numpy as np

from kdkeras.deploy import exporter
from kdkeras.deploy import litert
from kdkeras.deploy import parity
from kdkeras.deploy import runners
from kdkeras.deploy import signatures
from kdkeras.utils import atomic
from kdkeras.utils import keras_compat
from kdkeras.utils.atomic import atomic_path

__all__ = [
    "MODES",
    "compare_runners",
    "default_settings",
    "model_kind",
    "onnx_quantized_ops",
    "quantize",
    "quantize_tflite",
    "tflite_quantized_ops",
    "warn_if_nothing_quantized",
]

MODES = ("static", "dynamic")


def _is_x86():
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def model_kind(proto):
    """`"cnn"` when the graph has convolutions, `"transformer"` when it has
    attention-style MatMuls or LayerNormalization, else `"mlp"`."""
    ops = {n.op_type for n in proto.graph.node}
    if ops & {"Conv", "ConvTranspose"}:
        return "cnn"
    if ops & {"LayerNormalization", "Softmax", "Einsum"} and "MatMul" in ops:
        return "transformer"
    return "mlp"


def default_settings(kind, mode=None):
    """The quantization settings kdkeras uses for a model kind.

    Args:
        kind: `"cnn"`, `"transformer"` or `"mlp"` (see `model_kind`).
        mode: `"static"` or `"dynamic"`. Defaults to `"static"` for CNNs
            and `"dynamic"` otherwise.

    Returns:
        A `dict`: `mode`, `per_channel`, `reduce_range`, `keep_logits_float`,
        `keep_first_float`, `op_types`.
    """
    if mode is None:
        mode = "static" if kind == "cnn" else "dynamic"
    if mode not in MODES:
        raise ValueError(f"Expected mode to be one of {list(MODES)}. Received: mode={mode!r}")
    if mode == "static":
        return {
            "mode": "static",
            "per_channel": True,
            "reduce_range": _is_x86(),
            "keep_logits_float": True,
            "keep_first_float": kind == "cnn",
            "op_types": ["Conv", "MatMul", "Gemm"],
        }
    return {
        "mode": "dynamic",
        "per_channel": False,
        "reduce_range": _is_x86(),
        "keep_logits_float": False,
        "keep_first_float": False,
        "op_types": ["MatMul", "Gemm"],
    }


def _first_layer_nodes(proto):
    """Name of the first Conv/MatMul/Gemm reached from the graph inputs."""
    consumers = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    frontier = [i.name for i in proto.graph.input]
    seen = set()
    while frontier:
        name = frontier.pop(0)
        for node in consumers.get(name, []):
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type in ("MatMul", "Gemm", "Conv"):
                return [node.name]
            frontier.extend(node.output)
    return []


def _logits_nodes(proto):
    """Names of the nodes computing the first graph output, back to the
    last MatMul/Gemm/Conv (bias adds and reshapes included)."""
    producers = {out: node for node in proto.graph.node for out in node.output}
    name = proto.graph.output[0].name
    names = []
    for _ in range(8):
        node = producers.get(name)
        if node is None:
            break
        names.append(node.name)
        if node.op_type in ("MatMul", "Gemm", "Conv"):
            return names
        if not node.input:
            break
        name = node.input[0]
    return []


# Weight-bearing ONNX ops (a constant weight input), and the integer kernels
# onnxruntime's operator-format quantization replaces them with.
_ONNX_WEIGHT_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
_ONNX_INTEGER_OPS = (
    "ConvInteger",
    "DynamicQuantizeMatMul",
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "QGemm",
    "QLinearConv",
    "QLinearMatMul",
)
_TFLITE_WEIGHT_OPS = (
    "BATCH_MATMUL",
    "CONV_2D",
    "CONV_3D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "TRANSPOSE_CONV",
)


def onnx_quantized_ops(proto):
    """`(quantized, total)` weight-bearing ops of an ONNX graph.

    Weight-bearing: `Conv`, `ConvTranspose`, `MatMul` or `Gemm` with a
    constant weight (an initializer, or a `DequantizeLinear` of one), and
    the integer kernels that replace them. Quantized: the weight is stored
    as an integer tensor (QDQ) or the op is an integer kernel. A MatMul of
    two activations (attention scores) bears no weight and is not counted.
    """
    from onnx import TensorProto

    integer = {TensorProto.INT8, TensorProto.UINT8, TensorProto.INT4, TensorProto.UINT4}
    inits = {t.name: t.data_type for t in proto.graph.initializer}
    producers = {out: node for node in proto.graph.node for out in node.output}

    def weight_kind(name):
        if name in inits:
            return "int" if inits[name] in integer else "float"
        node = producers.get(name)
        if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in inits:
            return "int" if inits[node.input[0]] in integer else "float"
        return None

    quantized = total = 0
    for node in proto.graph.node:
        if node.op_type in _ONNX_INTEGER_OPS:
            quantized, total = quantized + 1, total + 1
        elif node.op_type in _ONNX_WEIGHT_OPS:
            kinds = {weight_kind(name) for name in node.input[:2]}
            if "int" in kinds:
                quantized, total = quantized + 1, total + 1
            elif "float" in kinds:
                total += 1
    return quantized, total


def tflite_quantized_ops(path):
    """`(quantized, total)` weight-bearing ops of a LiteRT file.

    Weight-bearing: convolutions, fully-connected layers and batch matmuls;
    quantized: the weight tensor (input 1) is int8, directly or through a
    `DEQUANTIZE`.
    """
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=os.fspath(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = keras_compat.tflite_ops(interpreter)
    producers = {out: op for op in ops for out in op["outputs"]}
    quantized = total = 0
    for op in ops:
        if op["op_name"] not in _TFLITE_WEIGHT_OPS or len(op["inputs"]) < 2:
            continue
        weight = op["inputs"][1]
        source = producers.get(weight)
        if source is not None and source["op_name"] == "DEQUANTIZE":
            weight = source["inputs"][0]
        total += 1
        if weight in tensors and np.dtype(tensors[weight]["dtype"]) in (np.int8, np.int16):
            quantized += 1
    return quantized, total


def warn_if_nothing_quantized(report, path):
    """Warns (a `UserWarning`) when int8 quantization left every weight-bearing op float.

    Returns the message, or `None` when something was quantized.
    """
    quantized, total = report.get("quantized_ops"), report.get("quantizable_ops")
    if quantized is None or quantized > 0:
        return None
    excluded = report.get("nodes_excluded") or []
    why = (
        f" ({len(excluded)} excluded by default: the first and the logits layers stay float32)"
        if excluded
        else ""
    )
    ratio = report.get("size_ratio")
    size = f", {ratio:.2f}x the float32 size" if ratio is not None else ""
    message = (
        f"int8 quantization quantized 0 of {total} weight-bearing ops{why}: "
        f"{os.fspath(path)} holds float32 weights{size}."
    )
    warnings.warn(message, UserWarning, stacklevel=3)
    return message


class _Reader:
    """onnxruntime `CalibrationDataReader` over NumPy arrays."""

    def __init__(self, names, inputs, batch_size=32):
        self.names = names
        self.inputs = inputs
        self.batch_size = batch_size
        self.start = 0

    def get_next(self):
        n = len(self.inputs[0])
        if self.start >= n:
            return None
        stop = min(self.start + self.batch_size, n)
        batch = runners.take(self.inputs, self.start, stop)
        self.start = stop
        return {k: v for k, v in zip(self.names, batch)}

    def rewind(self):
        self.start = 0


def _split_eval(eval_data):
    if eval_data is None:
        raise ValueError(
            "Expected held-out data `eval_data=(x, y)` or `x`: agreement of "
            "an int8 model on random inputs means nothing. "
            "Received: eval_data=None"
        )
    if isinstance(eval_data, tuple) and len(eval_data) == 2:
        x, y = eval_data
    else:
        x, y = eval_data, None
    return runners.as_input_list(x), None if y is None else np.asarray(y)


def _accuracy(outputs, y):
    if y is None:
        return None
    return float(np.mean(outputs[0].argmax(-1) == y.reshape(-1)))


def compare_runners(float_runner, int8_runner, x, y, *, batch_size=64, repeats=3, calls=10):
    """Size-independent figures of an int8 runner against its float32 one:
    accuracies, agreement and latency ratios at batch 1 and `batch_size`."""
    ref = runners.run_batched(float_runner, x, batch_size)
    out = runners.run_batched(int8_runner, x, batch_size)
    figures = {
        "accuracy_float32": _accuracy(ref, y),
        "accuracy_int8": _accuracy(out, y),
        "agreement_with_float32": float(np.mean(ref[0].argmax(-1) == out[0].argmax(-1))),
        "num_eval_samples": int(len(x[0])),
    }
    if y is not None:
        figures["accuracy_change"] = figures["accuracy_int8"] - figures["accuracy_float32"]
    for bs in (1, batch_size):
        batch = runners.take(x, 0, bs)
        t_float, t_int8 = runners.interleaved_timings(
            [float_runner, int8_runner], batch, calls=calls, repeats=repeats
        )
        figures[f"latency_ms_float32_batch{bs}"] = 1e3 * float(np.median(t_float))
        figures[f"latency_ms_int8_batch{bs}"] = 1e3 * float(np.median(t_int8))
        figures[f"latency_ratio_batch{bs}"] = float(np.median(t_int8) / np.median(t_float))
    return figures


def quantize(
    model,
    onnx_path,
    path,
    *,
    mode=None,
    calibration_data=None,
    eval_data=None,
    min_agreement=0.99,
    per_channel=None,
    reduce_range=None,
    keep_logits_float=None,
    keep_first_float=None,
    op_types=None,
    num_calibration=256,
    batch_size=64,
    batch_sizes=parity.DEFAULT_BATCH_SIZES,
    threads=None,
):
    """Quantizes a float32 ONNX file to int8 and gates it on held-out data.

    Args:
        model: the float32 Keras model the ONNX file was exported from (the
            reference of the gate).
        onnx_path: the float32 ONNX file (from `kdkeras.deploy.export`).
        path: where to write the int8 ONNX file.
        mode: `"static"` or `"dynamic"`. Defaults to `"static"` for CNNs
            and `"dynamic"` (MatMul/Gemm only) for Transformers and MLPs.
        calibration_data: an array or list of arrays from the user's data,
            for `"static"`; ideally training samples, not the test set.
        eval_data: held-out `(x, y)` or `x`; accuracy needs `y`.
        min_agreement: smallest argmax agreement with the Keras model on
            `eval_data`. Defaults to `0.99`.
        per_channel: per-channel weight scales. Defaults by mode
            (`default_settings`).
        reduce_range: 7-bit weights. Defaults to `True` on x86.
        keep_logits_float: leave the layer producing the output in float32.
            Defaults to `True` for `"static"`.
        keep_first_float: leave the first Conv/MatMul in float32. Defaults
            to `True` for static CNNs: onnxruntime's `QLinearConv` on a
            1-3 channel input ran 20x slower than the float kernel.
        op_types: operator types to quantize. Defaults by mode.
        num_calibration: calibration samples used. Defaults to `256`.
        batch_size: the batch size of the throughput comparison. Defaults
            to `64`.
        batch_sizes: the gate runs at each. Defaults to `(1, 16)`.
        threads: onnxruntime threads. Defaults to all cores.

    Returns:
        The int8 model's manifest (a `dict`); `manifest["quantization"]`
        holds settings, `quantized_ops` of `quantizable_ops` (the
        weight-bearing ops whose weights became int8, see
        `onnx_quantized_ops`), `size_ratio`, latency ratios and accuracy
        change. When no op was quantized, a `UserWarning` says so.

    Raises:
        ParityError: agreement with the Keras model below `min_agreement`.
        ValueError: bad arguments, missing data.

    Example:

    ```python
    manifest = kdkeras.deploy.quantize(
        student, "out/student.onnx", "out/student.int8.onnx",
        calibration_data=x_train[:256], eval_data=(x_test, y_test))
    print(manifest["quantization"]["size_ratio"])
    ```
    """
    onnx = runners.require("onnx")
    q = runners.require("onnxruntime.quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnx_path, path = os.fspath(onnx_path), os.fspath(path)
    if not os.path.exists(onnx_path):
        raise ValueError(
            f"Expected an existing float32 ONNX file. Received: onnx_path={onnx_path!r}"
        )
    x, y = _split_eval(eval_data)
    proto = onnx.load(onnx_path)
    kind = model_kind(proto)
    settings = default_settings(kind, mode)
    for key, value in (
        ("per_channel", per_channel),
        ("reduce_range", reduce_range),
        ("keep_logits_float", keep_logits_float),
        ("keep_first_float", keep_first_float),
        ("op_types", op_types),
    ):
        if value is not None:
            settings[key] = value
    names = [i.name for i in proto.graph.input]
    specs = signatures.input_specs(model, x)
    signatures.check_input_shapes(specs, x)
    if settings["mode"] == "static":
        if calibration_data is None:
            raise ValueError(
                "Expected `calibration_data` (samples of the user's data) for "
                "static quantization. Received: calibration_data=None"
            )
        cal = [c[:num_calibration] for c in runners.as_input_list(calibration_data)]
        signatures.check_input_shapes(specs, cal)

    # Built under a staging name, renamed into place once it passes the gate.
    target = os.fspath(path)
    staged = atomic.staging_path(target, suffix=".onnx")
    with atomic_path(staged, suffix=".onnx") as tmp:
        prep = tmp + ".prep.onnx"
        try:
            # Shape inference + graph fusions first, as onnxruntime advises;
            # fall back to the raw graph when symbolic inference fails.
            try:
                quant_pre_process(onnx_path, prep, skip_symbolic_shape=True)
                source = prep
            except Exception:  # noqa: BLE001 - preprocessing is optional
                source = onnx_path
            source_proto = onnx.load(source)
            exclude = (_logits_nodes(source_proto) if settings["keep_logits_float"] else []) + (
                _first_layer_nodes(source_proto) if settings["keep_first_float"] else []
            )
            settings["nodes_excluded"] = exclude
            if settings["mode"] == "static":
                q.quantize_static(
                    source,
                    tmp,
                    _Reader(names, cal),
                    quant_format=q.QuantFormat.QDQ,
                    op_types_to_quantize=settings["op_types"],
                    per_channel=settings["per_channel"],
                    reduce_range=settings["reduce_range"],
                    activation_type=q.QuantType.QUInt8,
                    weight_type=q.QuantType.QInt8,
                    nodes_to_exclude=exclude,
                    calibrate_method=q.CalibrationMethod.MinMax,
                )
                settings["calibration_samples"] = int(len(cal[0]))
            else:
                q.quantize_dynamic(
                    source,
                    tmp,
                    op_types_to_quantize=settings["op_types"],
                    per_channel=settings["per_channel"],
                    reduce_range=settings["reduce_range"],
                    weight_type=q.QuantType.QInt8,
                    nodes_to_exclude=exclude,
                )
        finally:
            if os.path.exists(prep):
                os.remove(prep)

    float_runner = runners.OnnxRunner(onnx_path, threads)
    int8_runner = runners.OnnxRunner(staged, threads)
    report = {"model_kind": kind, **settings}
    report["quantized_ops"], report["quantizable_ops"] = onnx_quantized_ops(onnx.load(staged))
    report["size_ratio"] = os.path.getsize(staged) / os.path.getsize(onnx_path)
    warn_if_nothing_quantized(report, target)
    report.update(compare_runners(float_runner, int8_runner, x, y, batch_size=batch_size))
    return exporter.gate(
        model,
        staged,
        "onnx",
        x,
        specs=specs,
        data="given",
        info={"route": "onnxruntime.quantization", "fixes": []},
        opset=max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        min_agreement=min_agreement,
        batch_sizes=batch_sizes,
        threads=threads,
        parity_gate="agreement",
        extra={"quantization": report, "source": os.path.basename(onnx_path)},
        publish_as=target,
    )


def quantize_tflite(
    model,
    path,
    *,
    calibration_data,
    eval_data,
    min_agreement=0.99,
    num_calibration=256,
    batch_sizes=parity.DEFAULT_BATCH_SIZES,
    threads=None,
):
    """LiteRT int8 (weights and activations, float32 input and output).

    Calibrated on `calibration_data`; gated on `eval_data` by argmax
    agreement with the Keras model like `quantize`. Returns the manifest.
    """
    x, y = _split_eval(eval_data)
    specs = signatures.input_specs(model, x)
    signatures.check_input_shapes(specs, x)
    cal = [c[:num_calibration] for c in runners.as_input_list(calibration_data)]
    signatures.check_input_shapes(specs, cal)
    target = os.fspath(path)
    staged = atomic.staging_path(target, suffix=".tflite")
    info = litert.write_litert(model, staged, specs, calibration=cal)
    runner = runners.TFLiteRunner(staged, threads)
    out = runners.run_batched(runner, x, 64)
    ref = parity.keras_outputs(model, x)
    report = {
        "mode": "litert-int8",
        "calibration_samples": int(len(cal[0])),
        "accuracy_float32": _accuracy(ref, y),
        "accuracy_int8": _accuracy(out, y),
        "agreement_with_float32": float(np.mean(ref[0].argmax(-1) == out[0].argmax(-1))),
    }
    report["quantized_ops"], report["quantizable_ops"] = tflite_quantized_ops(staged)
    warn_if_nothing_quantized(report, target)
    return exporter.gate(
        model,
        staged,
        "tflite",
        x,
        specs=specs,
        info=info,
        min_agreement=min_agreement,
        batch_sizes=batch_sizes,
        threads=threads,
        parity_gate="agreement",
        extra={"quantization": report},
        publish_as=target,
    )
