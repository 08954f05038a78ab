"""Reaching intermediate layer outputs during a model's single forward pass.

A tap records what a layer returns while the model runs, without rebuilding
the model: it works the same for Functional, Sequential, nested and
subclassed models. While a `capture` block is open, each tapped layer's
`call` is wrapped on the instance; the wrapper is removed when the block
closes, so a saved or exported model never contains it.
"""

import contextlib

import keras


def iter_layers(model):
    """All layers reachable from `model`, depth first, the model excluded."""
    seen = set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if id(layer) not in seen:
            seen.add(id(layer))
            yield layer


def layer_names(model):
    """Names of every layer inside `model` (nested models included)."""
    return [layer.name for layer in iter_layers(model)]


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
        raise TypeError(
            "Expected a layer name or a keras.layers.Layer. "
            f"Received: {role}_layer_name={layer!r}"
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

            def call(*args, __original=original, __key=id(layer), **kwargs):
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
