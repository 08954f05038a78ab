"""Running an exported artifact (or a Keras model) on NumPy arrays.

One small runner per format, each with `run(inputs) -> list of arrays`, so
that the parity gate, the quantization report and the benchmark all call
models the same way. Optional packages are imported here, lazily.
"""

import os
import re

import numpy as np

from kdkeras.utils import keras_compat

__all__ = [
    "EXPORT_EXTRA_HINT",
    "KerasRunner",
    "OnnxRunner",
    "SavedModelRunner",
    "TFLiteRunner",
    "as_input_list",
    "default_threads",
    "describe_session_options",
    "detect_format",
    "interleaved_timings",
    "load_keras",
    "load_runner",
    "onnx_session_options",
    "require",
    "run_batched",
    "take",
]

EXPORT_EXTRA_HINT = "Install it with `pip install 'kdkeras[export]'`."


def require(module_name):
    """Imports an optional module of the `export` extra, with an install hint."""
    import importlib

    try:
        return importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(
            f"This feature needs the `{module_name.split('.')[0]}` package. {EXPORT_EXTRA_HINT}"
        ) from e


def detect_format(path):
    """Returns `"onnx"`, `"tflite"`, `"keras"` or `"saved_model"` for a path."""
    path = os.fspath(path)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            return "saved_model"
        raise ValueError(
            f"Expected a SavedModel folder (with saved_model.pb). Received: path={path!r}"
        )
    ext = os.path.splitext(path)[1].lower()
    formats = {".onnx": "onnx", ".tflite": "tflite", ".keras": "keras"}
    if ext not in formats:
        raise ValueError(
            "Expected a model file ending in .onnx, .tflite or .keras, or a "
            f"SavedModel folder. Received: path={path!r}"
        )
    return formats[ext]


def as_input_list(inputs):
    """A single array or a list/tuple of arrays, as a list of arrays."""
    if isinstance(inputs, (list, tuple)):
        return [np.asarray(x) for x in inputs]
    return [np.asarray(inputs)]


def take(inputs, start, stop):
    return [x[start:stop] for x in inputs]


def default_threads():
    return os.cpu_count() or 1


def onnx_session_options(threads=None):
    """onnxruntime `SessionOptions` with every setting that matters set."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = int(threads or default_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


def describe_session_options(options):
    return {
        "graph_optimization_level": str(options.graph_optimization_level).split(".")[-1],
        "execution_mode": str(options.execution_mode).split(".")[-1],
        "intra_op_num_threads": options.intra_op_num_threads,
        "inter_op_num_threads": options.inter_op_num_threads,
        "providers": ["CPUExecutionProvider"],
    }


class OnnxRunner:
    kind = "onnx"

    def __init__(self, path, threads=None):
        ort = require("onnxruntime")
        self.path = os.fspath(path)
        self.options = onnx_session_options(threads)
        self.session = ort.InferenceSession(
            self.path, self.options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._dtypes = [_ORT_DTYPES.get(i.type, "float32") for i in self.session.get_inputs()]

    def run(self, inputs):
        feed = {
            name: np.asarray(x, dtype=dtype)
            for name, x, dtype in zip(self.input_names, inputs, self._dtypes)
        }
        return self.session.run(None, feed)

    def settings(self):
        return describe_session_options(self.options)


_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(float16)": "float16",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(bool)": "bool",
}


class TFLiteRunner:
    kind = "tflite"

    def __init__(self, path, threads=None):
        import tensorflow as tf

        self.path = os.fspath(path)
        self.threads = int(threads or default_threads())
        self.interpreter = tf.lite.Interpreter(model_path=self.path, num_threads=self.threads)
        self.interpreter.allocate_tensors()
        self.input_details, self._outputs = _signature_order(self.interpreter)
        self.input_names = [d["name"] for d in self.input_details]
        self.output_names = [d["name"] for d in self._outputs]
        self._shapes = [tuple(d["shape"]) for d in self.input_details]

    def run(self, inputs):
        shapes = [tuple(np.shape(x)) for x in inputs]
        if shapes != self._shapes:
            # LiteRT keeps one allocation per shape: resize only on change.
            for detail, shape in zip(self.input_details, shapes):
                self.interpreter.resize_tensor_input(detail["index"], shape, strict=False)
            self.interpreter.allocate_tensors()
            self._shapes = shapes
        for detail, x in zip(self.input_details, inputs):
            self.interpreter.set_tensor(detail["index"], np.asarray(x, dtype=detail["dtype"]))
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(d["index"]).copy() for d in self._outputs]

    def settings(self):
        return {"num_threads": self.threads}


def _natural(name):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _signature_order(interpreter):
    """Input and output details in the order of the model's own inputs and outputs.

    `get_input_details()` lists tensors by index, which for a model on a
    dict of inputs (keras-hub: `segment_ids, token_ids, padding_mask`) is not
    `model.inputs` order (sorted keys). The serving signature names them;
    sorted naturally (`inputs_2` before `inputs_10`), they follow the
    model's order, as Keras flattens dicts by sorted key.
    """
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1:
        return inputs, outputs
    key = next(iter(signatures))
    runner = interpreter.get_signature_runner(key)
    ordered = []
    for details, named in (
        (inputs, runner.get_input_details()),
        (outputs, runner.get_output_details()),
    ):
        by_index = {d["index"]: d for d in details}
        indices = [named[name]["index"] for name in sorted(named, key=_natural)]
        if sorted(indices) != sorted(by_index):
            return inputs, outputs
        ordered.append([by_index[i] for i in indices])
    return ordered[0], ordered[1]


class KerasRunner:
    """A Keras model behind a `tf.function`-compiled call.

    Never `model.predict`: its per-call overhead (tens of milliseconds)
    swamps batch-1 latency and hides real differences between models.
    """

    kind = "keras"

    def __init__(self, model, path=None, jit_compile=False):
        import tensorflow as tf

        self.model = model
        self.path = None if path is None else os.fspath(path)
        self.jit_compile = jit_compile
        try:
            inputs = model.inputs
        except (AttributeError, ValueError):
            inputs = None
        if inputs:
            specs = [tf.TensorSpec((None,) + tuple(t.shape[1:]), t.dtype) for t in inputs]
            self._dtypes = [s.dtype.as_numpy_dtype for s in specs]
            self.input_names = [
                getattr(t, "name", None) or f"input_{i}" for i, t in enumerate(inputs)
            ]
        else:
            # A subclassed model: traced once per new input shape.
            specs = None
            self._dtypes = None
            self.input_names = None

        struct = keras_compat.inputs_struct(model)

        def call(*xs):
            if isinstance(struct, dict):  # keras-hub backbones take a dict
                args = tf.nest.pack_sequence_as(struct, list(xs))
            else:
                args = xs[0] if len(xs) == 1 else list(xs)
            return tf.nest.flatten(model(args, training=False))

        self._fn = tf.function(
            call,
            input_signature=specs,
            jit_compile=jit_compile,
            reduce_retracing=True,
        )

    def run(self, inputs):
        dtypes = self._dtypes or [None] * len(inputs)
        outputs = self._fn(*[np.asarray(x, dtype=d) for x, d in zip(inputs, dtypes)])
        return [o.numpy() for o in outputs]

    def settings(self):
        import tensorflow as tf

        return {
            "call": "tf.function",
            "jit_compile": self.jit_compile,
            "intra_op_parallelism_threads": (
                tf.config.threading.get_intra_op_parallelism_threads()
            ),
            "inter_op_parallelism_threads": (
                tf.config.threading.get_inter_op_parallelism_threads()
            ),
        }


class SavedModelRunner:
    kind = "saved_model"

    def __init__(self, path, threads=None):
        import tensorflow as tf

        self.path = os.fspath(path)
        self.obj = tf.saved_model.load(self.path)
        self._tf = tf

    def run(self, inputs):
        tf = self._tf
        args = [tf.constant(x) for x in inputs]
        # Exported from a model on a dict of inputs, `serve` takes that dict.
        signature = self.obj.serve.concrete_functions[0].structured_input_signature[0][0]
        if isinstance(signature, dict):
            outputs = self.obj.serve(tf.nest.pack_sequence_as(signature, args))
        else:
            outputs = self.obj.serve(args[0] if len(args) == 1 else args)
        return [o.numpy() for o in tf.nest.flatten(outputs)]

    def settings(self):
        return {}


def load_keras(path, safe_mode=True):
    """Loads a `.keras` file with a clear error for a file that is no model.

    `safe_mode=False` is the opt-in for files you trust that hold a `Lambda`
    layer (arbitrary code, refused by Keras's safe mode).
    """
    import keras

    try:
        return keras.models.load_model(os.fspath(path), compile=False, safe_mode=safe_mode)
    except Exception as e:  # noqa: BLE001 - any failure means "not a model"
        message = " ".join(str(e).split())
        hint = ""
        if safe_mode and "safe_mode" in message:
            hint = (
                " It holds code (a Lambda layer), refused in safe mode; if you "
                "trust the file, pass --unsafe-deserialization (command line) "
                "or safe_mode=False."
            )
        raise ValueError(
            "Expected a Keras model file (.keras) that `keras.models."
            f"load_model` can read ({type(e).__name__}: {message[:200]}).{hint} "
            f"Received: path={path!r}"
        ) from e


def load_runner(model, threads=None, safe_mode=True):
    """Returns a runner for a path (.onnx, .tflite, .keras, SavedModel) or a
    Keras model."""
    if not isinstance(model, (str, os.PathLike)):
        return KerasRunner(model)
    path = os.fspath(model)
    if not os.path.exists(path):
        raise ValueError(f"Expected an existing model file. Received: path={path!r}")
    fmt = detect_format(path)
    if fmt == "keras":
        return KerasRunner(load_keras(path, safe_mode=safe_mode), path=path)
    try:
        if fmt == "onnx":
            return OnnxRunner(path, threads)
        if fmt == "tflite":
            return TFLiteRunner(path, threads)
        return SavedModelRunner(path, threads)
    except ImportError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure means "not a model"
        raise ValueError(
            f"Expected a loadable {fmt} model ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:200]}). Received: path={path!r}"
        ) from e


def run_batched(runner, inputs, batch_size):
    """Runs `runner` over `inputs` in chunks; concatenates each output."""
    n = len(inputs[0])
    chunks = [runner.run(take(inputs, i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    return [np.concatenate(parts, axis=0) for parts in zip(*chunks)]


def interleaved_timings(runners, inputs, *, calls=20, repeats=5, warmup=3):
    """Per-call wall times (seconds) for each runner, interleaved.

    Each of `repeats` rounds runs every runner `calls` times in turn, so that
    a slow patch of the machine (other jobs, frequency changes) is shared
    by all the models instead of landing on one of them.

    Returns:
        A list (one per runner) of 1-D arrays of `repeats * calls` times.
    """
    import time

    for runner in runners:
        for _ in range(warmup):
            runner.run(inputs)
    times = [[] for _ in runners]
    for _ in range(repeats):
        for i, runner in enumerate(runners):
            for _ in range(calls):
                start = time.perf_counter()
                runner.run(inputs)
                times[i].append(time.perf_counter() - start)
    return [np.asarray(t) for t in times]
