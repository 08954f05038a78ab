"""Every use of a private name of Keras, TensorFlow or tf2onnx in kdkeras, in one place.

Tested on Keras 3.15.1, TensorFlow 2.21 and tf2onnx 1.17; `pyproject.toml`
declares Keras >= 3.12, < 3.16, and `tests/test_architecture.py` checks the
installed Keras against that range and scans the rest of the package for
private names. When a Keras release renames one of these, this
module is the only one to change. Each function says what it reads and why
no public API serves.
"""

__all__ = [
    "KERAS_RANGE",
    "build_shapes",
    "compiled_loss",
    "dataset_graph_def",
    "flatten_layers",
    "in_multi_worker_mode",
    "inbound_node_count",
    "inputs_struct",
    "keras_history",
    "keras_mask",
    "keras_version",
    "loss_tracker",
    "nodes_by_depth",
    "outputs_struct",
    "patch_tf2onnx_for_numpy2",
    "set_initial_epoch",
    "swap_trainer_functions",
    "symbolic_build",
    "tf2onnx_convert_graph",
    "tflite_ops",
]

KERAS_RANGE = ((3, 12), (3, 16))  # [first, last_exclusive), as in pyproject.toml


def keras_version():
    """The installed Keras as a `(major, minor)` tuple."""
    import keras

    parts = []
    for piece in keras.version().split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def flatten_layers(model, include_self=False, recursive=True):
    """Every layer inside `model`, nested models and subclassed attributes included.

    `Model.layers` lists only the top level and misses layers held as
    attributes of subclassed models; `_flatten_layers` is what Keras itself
    uses to walk them.
    """
    walk = getattr(model, "_flatten_layers", None)
    if walk is None:
        return []
    return list(walk(include_self=include_self, recursive=recursive))


def inputs_struct(model):
    """The nested structure of a Functional model's inputs (dict, list or tensor), or None."""
    return getattr(model, "_inputs_struct", None)


def build_shapes(model):
    """The input shapes a subclassed model was built with (`{arg: shape}`), or None."""
    return getattr(model, "_build_shapes_dict", None)


def inbound_node_count(layer):
    """How many times a layer was called symbolically (1 for an unshared Functional layer)."""
    return len(getattr(layer, "_inbound_nodes", []))


def compiled_loss(model):
    """The loss given to `model.compile` as one callable `(y, y_pred, sample_weight)`, or None.

    A custom `train_step` needs it to add the ground-truth term; Keras keeps
    it on the trainer as `_compile_loss`.
    """
    return getattr(model, "_compile_loss", None)


def loss_tracker(model):
    """The `Mean` metric behind the `loss` log of `fit`/`evaluate`."""
    return model._loss_tracker


def set_initial_epoch(model, epoch):
    """Makes the next `fit` start at `epoch` (what Keras's BackupAndRestore does)."""
    model._initial_epoch = int(epoch)


def dataset_graph_def(dataset):
    """The serialized graph of a `tf.data.Dataset` as a `GraphDef`.

    The only way to see which ops (shuffle, random maps) a pipeline holds.
    """
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(dataset._as_serialized_graph().numpy())
    return graph_def


def patch_tf2onnx_for_numpy2():
    """Keras's own patch of tf2onnx 1.17's removed NumPy aliases (`np.object`)."""
    try:
        from keras.src.export.tf2onnx_lib import patch_tf2onnx
    except ImportError:
        return
    patch_tf2onnx()


def swap_trainer_functions(maybe_symbolic_build, reduce_per_replica):
    """Replaces two functions of `keras/src/backend/tensorflow/trainer.py`.

    `TensorFlowTrainer._maybe_symbolic_build` and the module's
    `reduce_per_replica` (the multi-worker fix of
    `kdkeras.distill.multiworker`). Returns the previous pair, which a
    second call puts back.
    """
    from keras.src.backend.tensorflow import trainer

    previous = (trainer.TensorFlowTrainer._maybe_symbolic_build, trainer.reduce_per_replica)
    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    # The train/test functions look the name up in the module at call time.
    trainer.reduce_per_replica = reduce_per_replica
    return previous


def symbolic_build(model, data_batch):
    """Builds a model's metrics and optimizer variables from one batch, as `fit` does."""
    model._symbolic_build(data_batch=data_batch)


def nodes_by_depth(model):
    """A Functional model's `{depth: [nodes]}`: its layer calls in dependency order."""
    return model._nodes_by_depth


def keras_history(tensor):
    """The `(operation, node_index, tensor_index)` that produced a symbolic tensor."""
    return tensor._keras_history


def keras_mask(tensor):
    """The Keras mask attached to a layer's output (`mask_zero=True`, `Masking`), or None.

    Keras propagates padding masks by setting `_keras_mask` on the tensors
    layers return (`keras.src.backend.get_keras_mask` reads it); no public
    API exposes it. Keras's own losses read it from `y_pred`; the Distiller
    reads it from the student's output, to leave padded tokens out of the
    distillation terms too.
    """
    try:
        from keras.src.backend import get_keras_mask
    except ImportError:  # Keras < 3.6 kept it as a plain attribute
        return getattr(tensor, "_keras_mask", None)
    return get_keras_mask(tensor)


def outputs_struct(model):
    """The nested structure of a Functional model's outputs (dict, list or tensor)."""
    return model._outputs_struct


def tf2onnx_convert_graph(graph_def, **kwargs):
    """tf2onnx's GraphDef conversion, what `python -m tf2onnx.convert --saved-model` runs.

    `tf2onnx.convert.from_graph_def` cannot take the initialized tables and
    tensor renames that a SavedModel brings, so the CLI's own helper is used.
    """
    from tf2onnx import convert

    return convert._convert_common(graph_def, **kwargs)


def in_multi_worker_mode(strategy):
    """Whether a `MultiWorkerMirroredStrategy` really spans several workers."""
    check = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return bool(check()) if callable(check) else True


def tflite_ops(interpreter):
    """The ops of a LiteRT interpreter: `op_name`, `inputs`, `outputs` (tensor indices).

    `tf.lite.Interpreter` has no public op listing; `_get_ops_details` is
    what its own analyzer tools read. Used to count quantized ops.
    """
    return [
        {"op_name": op["op_name"], "inputs": list(op["inputs"]), "outputs": list(op["outputs"])}
        for op in interpreter._get_ops_details()
    ]
