"""The distillation terms inside the training step: build, call, gather, reduce.

The `Distiller` drives every term through here, once per step:

- `build_terms`: at construction, terms with heads or state (the protocol
  of `kdkeras.losses.DistillationLoss`: `build`, `layers`) create their
  layers for the shapes of the features they will receive;
- `call_options`: which of `training` and `indices` a term's `call` takes;
- `gather_global_batch`: under a `tf.distribute` strategy, the inputs of
  the terms with `needs_global_batch`, gathered from every replica once per
  step, so that those terms see the global batch;
- `term_value`: the term's weighted, reduced value for one step;
- `scale_for_replicas`: the share of each replica, so that gradients summed
  over replicas equal the single-device gradient.
"""

import inspect

import keras
from keras import ops

from kdkeras.distill import adapters as adapters_lib
from kdkeras.distill import indices as indices_lib
from kdkeras.distill import sequences
from kdkeras.losses import DistillationLoss
from kdkeras.losses import reduce_per_sample
from kdkeras.losses import reduce_per_token
from kdkeras.losses import token_count

__all__ = [
    "build_terms",
    "call_options",
    "gather_global_batch",
    "replica_count",
    "scale_for_replicas",
    "term_value",
    "unscale_for_replicas",
]


def replica_count():
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def scale_for_replicas(value):
    """Each replica's share of a global mean.

    Gradients are summed over replicas: each replica contributes its local
    mean divided by the replica count, so the sum is the global mean.
    Terms computed on the gathered global batch contribute the global mean
    divided by the count; the sum is again the global mean.
    """
    replicas = replica_count()
    return value / replicas if replicas > 1 else value


def unscale_for_replicas(value):
    replicas = replica_count()
    return value * replicas if replicas > 1 else value


def _own_build(term):
    return isinstance(term, DistillationLoss) and type(term).build is not DistillationLoss.build


def build_terms(terms, teacher, student, teacher_taps, student_taps, adapters):
    """Builds the terms that own layers; returns every layer they own.

    Each term whose class overrides `DistillationLoss.build` and is not
    built yet gets `build(teacher_shape, student_shape)`: the shapes of the
    tapped teacher features (or outputs) and of the student's, after its
    adapter, batch axis `None`. A term already built (passed to a second
    Distiller) keeps its layers.

    Returns:
        A flat list of the terms' layers (`term.layers`), for the
        `Distiller` to track.
    """
    wanted = [j for j, term in enumerate(terms) if _own_build(term) and not term.built]
    if wanted:
        t_shapes = adapters_lib.tapped_shapes(teacher, [teacher_taps[j] for j in wanted])
        s_shapes = adapters_lib.tapped_shapes(student, [student_taps[j] for j in wanted])
        for j, t_shape, s_shape in zip(wanted, t_shapes, s_shapes):
            adapter = adapters[j]
            if adapter is not None:
                out = adapter(keras.KerasTensor(s_shape, dtype=adapter.compute_dtype))
                s_shape = (None,) + tuple(out.shape)[1:]
            terms[j].build(t_shape, s_shape)
    layers = []
    for term in terms:
        if isinstance(term, DistillationLoss):
            layers.extend(term.layers)
    return layers


def call_options(term, position=None):
    """`{"training", "indices"}`, or a part: what the term's `call` is passed.

    `training` when `call` names that argument (as Keras does for layers);
    `indices` when the term sets `needs_indices`, whose `call` must then
    accept it.

    Raises:
        TypeError: a term that needs indices whose `call` cannot take them.
    """
    if not isinstance(term, DistillationLoss):
        return frozenset()
    parameters = inspect.signature(term.call).parameters
    options = set()
    if "training" in parameters:
        options.add("training")
    if term.needs_indices:
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        if "indices" not in parameters and not takes_any:
            where = "the term" if position is None else f"distillation_losses[{position}]"
            raise TypeError(
                f"Expected {type(term).__name__}.call to accept `indices=` because "
                f"{where} sets needs_indices=True. Received: call{inspect.signature(term.call)}"
            )
        options.add("indices")
    return frozenset(options)


def gather_global_batch(values):
    """`values` gathered along the batch axis from every replica.

    Inside a replica of a `tf.distribute` strategy with several replicas,
    every tensor of the structure is all-gathered, in replica order, with a
    gradient that routes each replica's share back to it; elsewhere the
    structure is returned as it is. `None` entries stay `None`.

    The tensors travel packed in one float64 tensor (exact for integers
    below 2**53), so a step issues a single collective: several collectives
    in one step may start in a different order on different replicas and
    then fail on mismatched shapes.

    Raises:
        ValueError: a tensor with an unknown size besides the batch axis.
    """
    import tensorflow as tf

    if replica_count() <= 1 or tf.distribute.in_cross_replica_context():
        return values
    flat = keras.tree.flatten(values)
    present = [i for i, v in enumerate(flat) if v is not None]
    if not present:
        return values
    parts, layouts = [], []
    for i in present:
        value = tf.convert_to_tensor(flat[i])
        trailing = tuple(value.shape[1:])
        if None in trailing:
            raise ValueError(
                "Expected tensors of known shape besides the batch axis to gather "
                "the batch across replicas for a term with needs_global_batch. "
                f"Received: a tensor of shape {tuple(value.shape)}"
            )
        width = 1
        for size in trailing:
            width *= size
        parts.append(tf.reshape(tf.cast(value, "float64"), (-1, width)))
        layouts.append((trailing, width, value.dtype))
    gathered = tf.distribute.get_replica_context().all_gather(tf.concat(parts, axis=1), axis=0)
    pieces = tf.split(gathered, [width for _, width, _ in layouts], axis=1)
    for i, piece, (trailing, _, dtype) in zip(present, pieces, layouts):
        flat[i] = tf.cast(tf.reshape(piece, (-1, *trailing)), dtype)
    return keras.tree.pack_sequence_as(values, flat)


def _missing_indices(term, position):
    return ValueError(
        "Expected the dataset index of every training sample for "
        f"distillation_losses[{position}] ({type(term).__name__}, needs_indices=True). "
        "Distiller.fit adds them to NumPy inputs; a tf.data.Dataset must carry them: "
        "kdkeras.distill.with_indices(unbatched_ds), or x as {INPUTS_KEY: x, "
        f"INDICES_KEY: index}} with INPUTS_KEY={indices_lib.INPUTS_KEY!r}, "
        f"INDICES_KEY={indices_lib.INDICES_KEY!r}. Received: a batch without indices"
    )


def term_value(
    term,
    t_value,
    s_value,
    y=None,
    sample_weight=None,
    temperature=None,
    indices=None,
    training=False,
    options=frozenset(),
    position=None,
    keras_mask=None,
):
    """One term's value for one step: a float32 scalar.

    kdkeras terms return per-sample values, weighted by `sample_weight` and
    reduced (`reduce_per_sample`); `keras.distillation` terms return their
    own batch mean. `temperature` (a variable or tensor, for schedules)
    replaces the term's `temperature` for this call. Terms with
    `needs_global_batch` get their inputs already gathered
    (`gather_global_batch`, once per step for all of them).
    """
    if not isinstance(term, DistillationLoss):
        # A keras.distillation term: already a batch mean, no sample weights.
        value = term.compute_loss(t_value, s_value)
        if len(value.shape) > 0:
            raise ValueError(
                f"Expected {type(term).__name__}.compute_loss to return a scalar. "
                f"Received a value of shape {tuple(value.shape)}"
            )
        return ops.cast(value, "float32")
    kwargs = {}
    if "training" in options:
        kwargs["training"] = training
    if "indices" in options:
        if indices is None and training:
            raise _missing_indices(term, position)
        kwargs["indices"] = indices
    # Token terms (language models) take the mask and divide by real tokens;
    # `keras_mask` is the Keras mask of the student's output, for output terms.
    tokens = term.reduction == "sum_over_tokens"
    if tokens and keras_mask is not None:
        sample_weight = sequences.with_mask(sample_weight, keras_mask)
    if tokens:
        kwargs["mask"] = sample_weight
    if temperature is None:
        values = term.call(t_value, s_value, y=y, **kwargs)
    else:
        # The term reads `self.temperature` in `call`: for the trace, it is
        # the variable, so every step sees the scheduled value.
        constant = term.temperature
        term.temperature = ops.convert_to_tensor(temperature)
        try:
            values = term.call(t_value, s_value, y=y, **kwargs)
        finally:
            term.temperature = constant
    if tokens:
        count = sequences.token_count_per_replica(token_count(values, sample_weight))
        return reduce_per_token(values, sample_weight, count)
    if keras_mask is not None and len(values.shape) == len(keras_mask.shape):
        sample_weight = sequences.with_mask(sample_weight, keras_mask)
    return reduce_per_sample(values, sample_weight)
