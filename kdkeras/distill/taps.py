"""Reaching intermediate layer outputs during a model's single forward pass.

A tap records what a layer returns while the model runs, without rebuilding
the model: it works the same for Functional, Sequential, nested and
subclassed models. While a `capture` block is open, each tapped layer's
`call` is wrapped on the instance; the wrapper is removed when the block
closes, so a saved or exported model never contains it.
"""

import contextlib
import logging

import keras

from kdkeras.losses import WrongTypeError
from kdkeras.utils import keras_compat

__all__ = [
    "capture",
    "feature_shapes",
    "find_layer",
    "free_batch_axis",
    "input_spec",
    "iter_layers",
    "print_message",
    "record_calls",
    "trace",
]


def iter_layers(model):
    """All layers reachable from `model`, depth first, the model excluded."""
    seen = set()
    for layer in keras_compat.flatten_layers(model):
        if id(layer) not in seen:
            seen.add(id(layer))
            yield layer


def find_layer(model, layer, role="model"):
    """Resolves a layer name or layer object to a layer inside `model`.

    Args:
        model: the Keras model to search, nested models included.
        layer: a layer name or a `keras.layers.Layer` that belongs to `model`.
        role: how the error message names the model (`"teacher"`, ...).

    Returns:
        The layer.

    Raises:
        ValueError: when no such layer is inside `model`; the message lists
            the available names.
    """
    layers = list(iter_layers(model))
    if isinstance(layer, keras.layers.Layer):
        if any(candidate is layer for candidate in layers):
            return layer
        wanted = f"the layer object {layer.name!r}"
    elif isinstance(layer, str):
        matches = [candidate for candidate in layers if candidate.name == layer]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ValueError(
                f"The {role} has {len(matches)} layers named {layer!r} "
                "(in different nested models). Pass the layer object instead."
            )
        wanted = repr(layer)
    else:
        # keras.distillation raises ValueError for such a layer name.
        raise WrongTypeError(
            f"Expected a layer name or a keras.layers.Layer. Received: {role}_layer_name={layer!r}"
        )
    raise ValueError(
        f"No layer {wanted} in the {role} model {model.name!r}. "
        f"Available layers: {[c.name for c in layers]}. "
        f"Received: {role}_layer_name={getattr(layer, 'name', layer)!r}"
    )


@contextlib.contextmanager
def capture(layers):
    """Records the outputs of `layers` while the block runs.

    Yields a dict mapping `id(layer)` to that layer's most recent output.
    A layer called several times in one pass (a shared layer) records its
    last call.

    Example:

    ```python
    with capture([student.get_layer("conv2")]) as store:
        logits = student(x, training=True)
    features = store[id(student.get_layer("conv2"))]
    ```
    """
    store = {}
    wrapped = []
    try:
        for layer in layers:
            if id(layer) in store or "call" in layer.__dict__:
                continue
            original = layer.call

            # Defaults bind this iteration's layer (a closure would see the last).
            def call(*args, __original=original, __key=id(layer), **kwargs):  # noqa: B008
                outputs = __original(*args, **kwargs)
                store[__key] = outputs
                return outputs

            # Bypass Layer.__setattr__: the wrapper must not be tracked.
            object.__setattr__(layer, "call", call)
            wrapped.append(layer)
            store.setdefault(id(layer), None)
        yield store
    finally:
        for layer in wrapped:
            object.__delattr__(layer, "call")


@contextlib.contextmanager
def record_calls(layers):
    """Like `capture`, but records `(layer, output)` for every call, in order."""
    calls = []
    wrapped = []
    try:
        for layer in layers:
            if any(layer is w for w in wrapped) or "call" in layer.__dict__:
                continue
            original = layer.call

            def call(*args, __original=original, __layer=layer, **kwargs):
                outputs = __original(*args, **kwargs)
                calls.append((__layer, outputs))
                return outputs

            object.__setattr__(layer, "call", call)
            wrapped.append(layer)
        yield calls
    finally:
        for layer in wrapped:
            object.__delattr__(layer, "call")


def input_spec(model):
    """The inputs of `model` as `keras.KerasTensor`s with a free batch axis.

    Read from `model.inputs` (Functional, Sequential with an input shape) or
    from the shape the model was built with (subclassed models, models built
    by a first call).

    Returns:
        A structure of `keras.KerasTensor`, or `None` when the model has
        never been built.
    """
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if inputs:
        struct = keras_compat.inputs_struct(model)
        if struct is None:
            struct = inputs[0] if len(inputs) == 1 else list(inputs)
        return keras.tree.map_structure(
            lambda t: keras.KerasTensor(free_batch_axis(t.shape), t.dtype), struct
        )
    shapes = keras_compat.build_shapes(model)
    if shapes and len(shapes) == 1:
        shape = next(iter(shapes.values()))
        if isinstance(shape, (list, tuple)) and all(d is None or isinstance(d, int) for d in shape):
            dtype = getattr(model, "input_dtype", None) or "float32"
            return keras.KerasTensor(free_batch_axis(shape), dtype)
    return None


def trace(model, fn):
    """Runs `fn(model_inputs)` symbolically, once, on no data.

    The trace happens in a scratch graph: shapes come out, nothing is
    computed and no variable changes.
    """
    import tensorflow as tf

    spec = input_spec(model)
    if spec is None:
        raise ValueError(
            f"Cannot infer the input shape of model {model.name!r}: it has no "
            "`inputs` and was never built. Build it first, for example with "
            "`model.build((None, *input_shape))` or by calling it on a batch."
        )
    tf_spec = keras.tree.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), spec)
    tf.function(fn, autograph=False).get_concrete_function(tf_spec)


def feature_shapes(model, layers):
    """The output shapes of `layers` when `model` runs, batch axis `None`.

    Works for every kind of model (Functional, Sequential, nested,
    subclassed): the model is traced once, symbolically, with the layers
    tapped.

    Args:
        model: a built Keras model.
        layers: layers inside `model`; `None` stands for the model's output.

    Returns:
        A list with, per entry of `layers`, the output shape as a tuple (or a
        structure of tuples for layers with several outputs).
    """
    wanted = [layer for layer in layers if layer is not None]
    result = {}

    def fn(inputs):
        with capture(wanted) as store:
            outputs = model(inputs, training=False)
        result["outputs"] = keras.tree.map_structure(_shape_of, outputs)
        result["taps"] = {
            key: keras.tree.map_structure(_shape_of, value) for key, value in store.items()
        }
        return keras.tree.flatten(outputs)

    trace(model, fn)
    return [
        result["outputs"] if layer is None else result["taps"].get(id(layer)) for layer in layers
    ]


def free_batch_axis(shape):
    """`shape` as a tuple with its batch (first) axis set to `None`."""
    shape = tuple(shape)
    return (None,) + shape[1:] if shape else shape


def _shape_of(tensor):
    return free_batch_axis(tensor.shape)


def print_message(message):
    """Prints like Keras's progress output: to the log when it is off."""
    if keras.config.is_interactive_logging_enabled():
        print(message, flush=True)
    else:
        logging.getLogger("kdkeras").info(message)
