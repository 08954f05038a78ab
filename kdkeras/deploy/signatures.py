"""The inputs of an exported model: specs with a dynamic batch, checks, random samples."""

import re

import numpy as np

from kdkeras.deploy import runners
from kdkeras.utils import keras_compat

__all__ = [
    "check_input_shapes",
    "check_plain_keras",
    "export_signature",
    "input_specs",
    "pack_inputs",
    "random_inputs",
]


def check_plain_keras(model):
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Expected a `keras.Model`. Received: model={model!r} of type {type(model).__name__}"
        )
    layers = [model] + list(keras_compat.flatten_layers(model))
    for layer in layers:
        module = type(layer).__module__ or ""
        if module == "kdkeras" or module.startswith("kdkeras."):
            hint = " Export its `student` instead." if hasattr(model, "student") else ""
            raise ValueError(
                "Expected a plain Keras model: an exported model never "
                "contains a teacher, adapters or any kdkeras object."
                f"{hint} Received: a {type(layer).__name__} "
                f"(from {module}) in model={model.name!r}"
            )


def pack_inputs(model, items):
    """Arrays or specs, in `model.inputs` order, as the model's call takes them.

    A model built on a dict of inputs (keras-hub backbones:
    `{"token_ids", "padding_mask", ...}`) refuses a list; it gets the dict
    back (`model.inputs` lists it in sorted key order). Any other model gets
    one item, or a list.
    """
    import keras

    items = list(items)
    struct = keras_compat.inputs_struct(model)
    if isinstance(struct, dict):
        return keras.tree.pack_sequence_as(struct, items)
    return items[0] if len(items) == 1 else items


def export_signature(model, specs):
    """The `input_signature` for `Model.export`: one argument, structured like the inputs."""
    return [pack_inputs(model, specs)]


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
            tf.TensorSpec((None,) + x.shape[1:], tf.as_dtype(x.dtype), name=f"input_{i}")
            for i, x in enumerate(runners.as_input_list(sample_inputs))
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
            f"Expected {len(specs)} input array(s) for the model. Received: {len(inputs)} array(s)"
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
        for layer in keras_compat.flatten_layers(model)
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
            arrays.append(rng.integers(0, _embedding_vocab(model), shape).astype(dtype))
        else:
            arrays.append(rng.random(shape).astype(dtype))
    return arrays
