"""Adapters: learned maps from a student's tapped features to the teacher's shape.

A feature term compares a student layer's output with a teacher layer's
output. When their shapes differ (channels, units, spatial size), a small
adapter on the student side bridges them: a 1x1 convolution or a `Dense`
projection for the channels, average pooling or bilinear upsampling for the
spatial size. Adapters are plain Keras layers held by the `Distiller`
(`distiller.adapters`): they train with the student and are never part of
the student, so a saved or exported student contains none.
"""

import keras

from kdkeras.distill import taps
from kdkeras.utils import keras_compat
from kdkeras.utils import tables

__all__ = ["build_adapters", "describe", "make_adapter", "tapped_shapes"]


def make_adapter(student_shape, teacher_shape, name=None):
    """A fresh adapter mapping features of `student_shape` to `teacher_shape`.

    Shapes include the batch axis (its value is ignored). The adapter is a
    `keras.Sequential` of stock layers:

    - images `(h, w, c)` to images: average pooling when the student's
      spatial size is a multiple of the teacher's, bilinear upsampling when
      the teacher's is a multiple of the student's, bilinear resizing
      otherwise; then a 1x1 `Conv2D` to the teacher's channels (pooling
      comes first and upsampling last, so the convolution runs at the
      smaller size);
    - vectors `(units,)` or sequences `(steps, units)` with equal steps: a
      `Dense` projection;
    - images to vectors: global average pooling, then `Dense`;
    - vectors to images: `Dense`, then `Reshape`.

    Projections have no activation, as the regressor of FitNets.

    Args:
        student_shape: shape of the student's features.
        teacher_shape: shape of the teacher's features.
        name: the adapter's name. Defaults to an automatic name.

    Returns:
        A `keras.Sequential`, or `None` when the shapes are equal.

    Raises:
        ValueError: for shapes no stock adapter bridges (pass your own layer
            as `adapter=` then).
    """
    s, t = tuple(student_shape)[1:], tuple(teacher_shape)[1:]
    if s == t:
        return None
    if None in s or None in t:
        raise ValueError(
            "Expected fully known feature shapes (besides the batch axis) to "
            "build an adapter; pass an `adapter=` layer instead. Received: "
            f"student features {student_shape}, teacher features {teacher_shape}"
        )
    layers = keras.layers
    stack = []
    if len(s) == 3 and len(t) == 3:
        (hs, ws, cs), (ht, wt, ct) = s, t
        post = []
        if (hs, ws) != (ht, wt):
            if hs % ht == 0 and ws % wt == 0:
                stack.append(layers.AveragePooling2D((hs // ht, ws // wt)))
            elif ht % hs == 0 and wt % ws == 0:
                post.append(layers.UpSampling2D((ht // hs, wt // ws), interpolation="bilinear"))
            else:
                post.append(layers.Resizing(ht, wt, interpolation="bilinear"))
        if cs != ct:
            stack.append(layers.Conv2D(ct, 1))
        stack += post
    elif len(s) == len(t) and len(s) in (1, 2) and s[:-1] == t[:-1]:
        stack.append(layers.Dense(t[-1]))
    elif len(s) == 3 and len(t) == 1:
        stack += [layers.GlobalAveragePooling2D(), layers.Dense(t[0])]
    elif len(s) == 1 and len(t) == 3:
        stack += [layers.Dense(t[0] * t[1] * t[2]), layers.Reshape(t)]
    else:
        raise ValueError(
            "No automatic adapter maps student features of shape "
            f"{student_shape} to teacher features of shape {teacher_shape}. "
            "Pass a keras layer as `adapter=` to the term, or tap other layers."
        )
    return keras.Sequential(stack, name=name)


def describe(adapter):
    """A one-line description of an adapter, for the summary table."""
    if adapter is None:
        return "none"
    parts = []
    sub = adapter.layers if isinstance(adapter, keras.Sequential) else [adapter]
    for layer in sub:
        if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (1, 1):
            parts.append(f"Conv2D 1x1 ->{layer.filters}")
        elif isinstance(layer, keras.layers.Dense):
            parts.append(f"Dense ->{layer.units}")
        elif isinstance(layer, keras.layers.AveragePooling2D):
            parts.append(f"AvgPool {layer.pool_size[0]}x{layer.pool_size[1]}")
        elif isinstance(layer, keras.layers.UpSampling2D):
            parts.append(f"UpSample {layer.size[0]}x{layer.size[1]}")
        elif isinstance(layer, keras.layers.Resizing):
            parts.append(f"Resize {layer.height}x{layer.width}")
        else:
            parts.append(type(layer).__name__)
    return ", ".join(parts)


def _fast_shapes(model, layers):
    """Shapes from the symbolic graph of Functional models, or `None`."""
    shapes = []
    for layer in layers:
        try:
            if layer is None:
                outputs = model.outputs
                if not outputs or len(outputs) != 1:
                    return None
                tensor = outputs[0]
            else:
                if keras_compat.inbound_node_count(layer) != 1:
                    return None  # never called symbolically, or shared
                tensor = layer.output
        except (AttributeError, ValueError):
            return None
        if keras.tree.is_nested(tensor):
            return None
        shapes.append(taps.free_batch_axis(tensor.shape))
    return shapes


def tapped_shapes(model, layers):
    """Output shapes of `layers` (`None`: the output) when `model` runs."""
    return _fast_shapes(model, layers) or taps.feature_shapes(model, layers)


def build_adapters(terms, teacher, student, teacher_taps, student_taps, verbose=True):
    """One adapter layer (or `None`) per distillation term of `distiller`.

    For each term:

    - no `adapter` attribute, or `adapter=None`: `None` (features compared
      as they are);
    - a Keras layer: that layer, built for the student's feature shape;
    - `"auto"`: `make_adapter(student_shape, teacher_shape)`, `None` when
      the shapes are equal.

    Feature shapes come from the models' symbolic graphs, or from one
    symbolic trace of each model (subclassed models). Every adapter is built
    here, so its variables exist before `fit` and are part of
    `distiller.trainable_variables`. A table of the pairs and their
    adapters is printed when at least one adapter was built automatically
    (after `keras.config.disable_interactive_logging()`, to the
    `kdkeras` logger instead).

    Args:
        terms: the distillation terms.
        teacher: the (first) teacher model.
        student: the student model.
        teacher_taps: per term, the tapped teacher layer, or `None` for the
            teacher's output (`taps.find_layer` results).
        student_taps: the same for the student.
        verbose: print the table. Defaults to `True`.

    Returns:
        A list with one adapter layer or `None` per term.

    Raises:
        ValueError: when an adapter's output does not have the teacher's
            feature shape, or no automatic adapter fits.
    """
    wanted = [
        j
        for j, term in enumerate(terms)
        if getattr(term, "adapter", None) is not None
        or teacher_taps[j] is not None
        or student_taps[j] is not None
    ]
    built = [None] * len(terms)
    if not wanted:
        return built
    try:
        t_shapes = tapped_shapes(teacher, [teacher_taps[j] for j in wanted])
        s_shapes = tapped_shapes(student, [student_taps[j] for j in wanted])
    except ValueError:
        # An unbuilt model: only terms with an adapter need the shapes.
        wanted = [j for j in wanted if getattr(terms[j], "adapter", None) is not None]
        if not wanted:
            return built
        t_shapes = tapped_shapes(teacher, [teacher_taps[j] for j in wanted])
        s_shapes = tapped_shapes(student, [student_taps[j] for j in wanted])
    rows, any_auto = [], False
    for j, t_shape, s_shape in zip(wanted, t_shapes, s_shapes):
        term = terms[j]
        adapter = getattr(term, "adapter", None)
        if isinstance(adapter, str):
            any_auto = True
            if not (_is_shape(t_shape) and _is_shape(s_shape)):
                if t_shape != s_shape:
                    raise ValueError(
                        "Automatic adapters need layers with a single output. "
                        "Pass an `adapter=` layer. Received: teacher features "
                        f"{t_shape}, student features {s_shape}"
                    )
                adapter = None
            else:
                adapter = make_adapter(s_shape, t_shape, name=f"adapter_{j}")
        if adapter is not None:
            out = adapter(keras.KerasTensor(s_shape, dtype=adapter.compute_dtype))
            out_shape = (None,) + tuple(out.shape)[1:]
            if getattr(term, "adapter_matches_teacher", True) and out_shape != t_shape:
                raise ValueError(
                    f"Expected the adapter of distillation_losses[{j}] to map "
                    f"student features {s_shape} to the teacher's {t_shape}. "
                    f"Received: an adapter with output shape {out_shape}"
                )
        built[j] = adapter
        rows.append(
            (
                getattr(term, "name", None) or type(term).__name__,
                _layer_name(teacher_taps[j]),
                str(t_shape[1:] if _is_shape(t_shape) else t_shape),
                _layer_name(student_taps[j]),
                str(s_shape[1:] if _is_shape(s_shape) else s_shape),
                describe(adapter),
                str(adapter.count_params()) if adapter is not None else "0",
            )
        )
    if verbose and any_auto and any(a is not None for a in built):
        taps.print_message(
            tables.format_table(
                rows,
                ("term", "teacher", "shape", "student", "shape", "adapter", "params"),
                markdown=False,
                title="Feature pairs and adapters:",
            )
        )
    return built


def _is_shape(value):
    return isinstance(value, tuple) and all(d is None or isinstance(d, int) for d in value)


def _layer_name(layer):
    return "(output)" if layer is None else layer.name
