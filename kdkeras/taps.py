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

from kdkeras.losses.base import WrongTypeError


def iter_layers(model):
    """All layers reachable from `model`, depth first, the model excluded."""
    seen = set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
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


@contextlib.contextmanager
def _record_calls(layers):
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
        struct = getattr(model, "_inputs_struct", None)
        if struct is None:
            struct = inputs[0] if len(inputs) == 1 else list(inputs)
        return keras.tree.map_structure(
            lambda t: keras.KerasTensor(free_batch_axis(t.shape), t.dtype), struct
        )
    shapes = getattr(model, "_build_shapes_dict", None)
    if shapes and len(shapes) == 1:
        shape = next(iter(shapes.values()))
        if isinstance(shape, (list, tuple)) and all(
            d is None or isinstance(d, int) for d in shape
        ):
            dtype = getattr(model, "input_dtype", None) or "float32"
            return keras.KerasTensor(free_batch_axis(shape), dtype)
    return None


def _trace(model, fn):
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
    tf_spec = keras.tree.map_structure(
        lambda t: tf.TensorSpec(t.shape, t.dtype), spec
    )
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
            key: keras.tree.map_structure(_shape_of, value)
            for key, value in store.items()
        }
        return keras.tree.flatten(outputs)

    _trace(model, fn)
    return [
        result["outputs"] if layer is None else result["taps"].get(id(layer))
        for layer in layers
    ]


def free_batch_axis(shape):
    """`shape` as a tuple with its batch (first) axis set to `None`."""
    shape = tuple(shape)
    return (None,) + shape[1:] if shape else shape


def _shape_of(tensor):
    return free_batch_axis(tensor.shape)


def _candidate_layers(model):
    """`(layer, shape)` of leaf layers with image (rank 4) or vector outputs.

    In the order they run, the last call kept per layer; layers whose output
    equals their input (activations, dropout) replace the layer before them,
    so a block is represented by its activated output. The model's final
    layer is left out.
    """
    leaves = [layer for layer in iter_layers(model) if not isinstance(layer, keras.Model)]
    order = {}

    def fn(inputs):
        with _record_calls(leaves) as calls:
            outputs = model(inputs, training=False)
        for layer, out in calls:
            if keras.tree.is_nested(out):
                continue
            order.pop(id(layer), None)
            order[id(layer)] = (layer, _shape_of(out))
        return keras.tree.flatten(outputs)

    _trace(model, fn)
    entries = list(order.values())[:-1]  # the last one is the model output
    picked = []
    for layer, shape in entries:
        if len(shape) not in (2, 4):
            continue
        if picked and picked[-1][1] == shape and _is_shape_preserving(layer):
            picked[-1] = (layer, shape)
        else:
            picked.append((layer, shape))
    return picked


def _is_shape_preserving(layer):
    return isinstance(
        layer,
        (
            keras.layers.Activation,
            keras.layers.ReLU,
            keras.layers.LeakyReLU,
            keras.layers.Dropout,
            keras.layers.BatchNormalization,
            keras.layers.LayerNormalization,
        ),
    )


def _stage_ends(candidates):
    """Last layer of each run of equal spatial size, plus the last vector."""
    ends = []
    for i, (layer, shape) in enumerate(candidates):
        nxt = candidates[i + 1][1] if i + 1 < len(candidates) else None
        if len(shape) == 4 and (nxt is None or nxt[1:3] != shape[1:3]):
            ends.append(i)
    vectors = [i for i, (_, shape) in enumerate(candidates) if len(shape) == 2]
    if vectors:
        ends.append(vectors[-1])
    return sorted(set(ends))


def propose_layer_pairs(teacher, student, n=3, verbose=True):
    """Proposes teacher/student layer pairs for feature distillation.

    Both models are traced once (symbolically). Candidates are the layers
    whose outputs are image features `(batch, height, width, channels)` or
    vectors `(batch, units)`; among them, the ends of stages (the last layer
    before the spatial size changes, and the last vector before the output)
    are preferred, as FitNets, AT and CRD tap them. Student stage ends are
    paired with the teacher stage end closest in relative depth (the share
    of the candidate layers run once the layer's output exists, in (0, 1]),
    preferring the same kind of feature (image or vector).

    Args:
        teacher: the teacher model (built).
        student: the student model (built).
        n: the number of pairs to propose. Defaults to 3.
        verbose: print a table of the pairs, their shapes and whether an
            adapter will be needed. Defaults to `True`.

    Returns:
        A list of up to `n` `(teacher_layer_name, student_layer_name)`
        tuples, shallow to deep, ready for `teacher_layer_name=` /
        `student_layer_name=` of a feature term.

    Example:

    ```python
    pairs = kdkeras.propose_layer_pairs(teacher, student, n=2)
    terms = [kdkeras.FeatureDistillation(teacher_layer_name=t,
                                         student_layer_name=s)
             for t, s in pairs]
    ```
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"Expected `n` to be an integer >= 1. Received: n={n!r}")
    t_cands = _candidate_layers(teacher)
    s_cands = _candidate_layers(student)
    if not t_cands or not s_cands:
        if verbose:
            _print(
                "No layer with image or vector features found to pair."
            )
        return []

    def depth(index, total):
        # The share of the candidates computed once this layer's output exists.
        return (index + 1) / total

    t_ends = _stage_ends(t_cands) or list(range(len(t_cands)))
    s_ends = _stage_ends(s_cands) or list(range(len(s_cands)))
    if len(s_ends) > n:
        # Keep the deepest stage ends, spread evenly from the shallowest.
        step = (len(s_ends) - 1) / max(n - 1, 1)
        s_ends = sorted({s_ends[round(len(s_ends) - 1 - k * step)] for k in range(n)})
    pairs, rows, used = [], [], set()
    for si in s_ends:
        s_layer, s_shape = s_cands[si]
        s_depth = depth(si, len(s_cands))
        scored = []
        for ti in t_ends:
            t_layer, t_shape = t_cands[ti]
            penalty = 0.0 if len(t_shape) == len(s_shape) else 1.0
            penalty += 0.5 if ti in used else 0.0
            scored.append((abs(depth(ti, len(t_cands)) - s_depth) + penalty, ti))
        ti = min(scored)[1]
        used.add(ti)
        t_layer, t_shape = t_cands[ti]
        pairs.append((t_layer.name, s_layer.name))
        rows.append(
            (
                t_layer.name,
                str(t_shape[1:]),
                s_layer.name,
                str(s_shape[1:]),
                "no" if t_shape == s_shape else "yes",
            )
        )
    if verbose:
        _print(
            _table(
                ("teacher layer", "shape", "student layer", "shape", "adapter"),
                rows,
                title="Proposed feature pairs (by relative depth):",
            )
        )
    return pairs


def _table(header, rows, title=None):
    widths = [
        max(len(str(v)) for v in column) for column in zip(header, *rows)
    ]
    line = lambda values: "  ".join(str(v).ljust(w) for v, w in zip(values, widths))
    out = [title] if title else []
    out += [line(header), line("-" * w for w in widths)]
    out += [line(row) for row in rows]
    return "\n".join(out)


def _print(message):
    """Prints like Keras's progress output: to the log when it is off."""
    if keras.config.is_interactive_logging_enabled():
        print(message, flush=True)
    else:
        logging.getLogger("kdkeras").info(message)
