"""What the `Distiller` needs for sequences: padding masks, token counts, unlabeled weights.

- `with_mask`: sample weights times the Keras mask of the student's output
  (`Embedding(mask_zero=True)`, `Masking`), so padding reaches the terms as
  it reaches Keras's own losses.
- `token_count_per_replica`: the real tokens of the global batch, summed
  across the replicas of a `tf.distribute` strategy, so that token terms
  divide by the token count of the whole batch on every replica.
- `pack_unlabeled_weights`: `fit(x, sample_weight=w)` and `evaluate(x,
  sample_weight=w)` without labels would lose `w` inside Keras; the weights
  are packed with the inputs instead (`teacher_cache.pack_sample_weight`).
- `check_top_k`: the conditions under which teacher outputs may be cached
  as top-k targets.

Imports `kdkeras.losses` and the sibling `teacher_cache`; TensorFlow only
inside `token_count_per_replica`.
"""

from keras import ops

from kdkeras.distill import teacher_cache as cache_lib
from kdkeras.losses import TokenDistillationLoss

__all__ = [
    "check_top_k",
    "pack_unlabeled_weights",
    "token_count_per_replica",
    "with_mask",
]


def with_mask(sample_weight, mask):
    """Sample weights times a `(batch, time)` padding mask, broadcast to its shape.

    Args:
        sample_weight: `None`, `(batch,)`, `(batch, 1)` or `(batch, time)`.
        mask: a boolean or 0/1 `(batch, time)` mask.

    Returns:
        float32 weights of the mask's shape.
    """
    mask = ops.cast(mask, "float32")
    if sample_weight is None:
        return mask
    weight = ops.cast(sample_weight, "float32")
    while len(weight.shape) > len(mask.shape) and weight.shape[-1] == 1:
        weight = ops.squeeze(weight, axis=-1)
    while len(weight.shape) < len(mask.shape):
        weight = ops.expand_dims(weight, axis=-1)
    return weight * mask


def token_count_per_replica(count):
    """The real tokens of the global batch divided by the replica count.

    Each replica divides its own weighted sum by this, so that once the
    Distiller divides every replica's value by the replica count (gradients
    are summed over replicas), the replicas add up to the global sum over
    the global token count, however unevenly the real tokens are spread. A
    mean of per-replica means would not: it overweights the tokens of the
    replica holding the shorter sequences.

    Args:
        count: this replica's number of real tokens, a float32 scalar.

    Returns:
        A float32 scalar; `count` itself outside a multi-replica strategy.
    """
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    context = tf.distribute.get_replica_context()
    if replicas == 1 or context is None:
        return count
    return context.all_reduce(tf.distribute.ReduceOp.SUM, count) / replicas


def pack_unlabeled_weights(method, args, kwargs, validation=False):
    """The `(args, kwargs)` of `fit`/`evaluate` with unlabeled weights packed into `x`.

    Keras's data adapters keep `sample_weight` only next to labels
    (`pack_x_y_sample_weight` returns `x` alone when `y` is `None`), so
    `fit(x, sample_weight=w)` would train without `w`, silently. Packed
    with the inputs, the weights travel with their samples through
    shuffling, `validation_split` and batching, and the Distiller's step
    unpacks them.

    Args:
        method: the bound `keras.Model.fit` or `evaluate` (for its signature).
        args: the positional arguments of the call.
        kwargs: the keyword arguments of the call.
        validation: also rewrite `validation_data=(x, None, w)`.

    Returns:
        `(args, kwargs)` to call `method` with.
    """
    import inspect

    import keras

    bound = inspect.signature(method).bind(*args, **kwargs)
    arguments = bound.arguments
    weight = arguments.get("sample_weight")
    x = arguments.get("x")
    # Datasets and generators carry their own weights ((x, None, w)
    # elements); Keras refuses `sample_weight` next to them with its own error.
    stream = (
        hasattr(x, "element_spec")  # tf.data.Dataset
        or hasattr(x, "__next__")  # generators
        or isinstance(x, keras.utils.PyDataset)
    )
    if arguments.get("y") is None and weight is not None and not stream:
        arguments["x"] = cache_lib.pack_sample_weight(x, weight)
        arguments["sample_weight"] = None
    data = arguments.get("validation_data") if validation else None
    if isinstance(data, (tuple, list)) and len(data) == 3 and data[1] is None:
        if data[2] is not None:
            arguments["validation_data"] = (cache_lib.pack_sample_weight(data[0], data[2]),)
    return bound.args, bound.kwargs


def check_top_k(top_k, teachers, terms, teacher_taps):
    """Validates `cache_teacher_outputs(top_k=...)`; returns the terms' `vocab_size`.

    Args:
        top_k: the requested `k`.
        teachers: the Distiller's teachers.
        terms: its distillation terms.
        teacher_taps: per term, the tapped teacher layer or `None` (output
            terms).

    Returns:
        The `vocab_size` shared by the token terms (or `None`), to cut the
        teacher's logits to before its top-k.

    Raises:
        ValueError: `top_k` not an integer >= 1, several teachers, an output
            term that needs the full distribution, a temperature other than
            1, or token terms with different `vocab_size`.
    """
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"Expected `top_k` to be an integer >= 1. Received: top_k={top_k!r}")
    if len(teachers) > 1:
        raise ValueError(
            "Expected a single teacher for top-k targets: the soft targets of "
            "several teachers are averaged over the whole vocabulary. "
            f"Received: {len(teachers)} teachers and top_k={top_k}"
        )
    vocab_sizes = set()
    for j, term in enumerate(terms):
        if teacher_taps[j] is not None:
            continue
        if not isinstance(term, TokenDistillationLoss):
            raise ValueError(
                "Expected only token terms (TokenDistillation, GeneralizedJSD, "
                "SkewKL) on the outputs with top-k teacher targets: other terms "
                "need the full distribution. Received: "
                f"distillation_losses[{j}]={type(term).__name__}"
            )
        if term.temperature != 1:
            raise ValueError(
                "Expected temperature=1 on token terms with top-k teacher "
                "targets: they hold log-probabilities at temperature 1, and the "
                "mass outside the top-k cannot be re-softened. Received: "
                f"distillation_losses[{j}] with temperature={term.temperature!r}"
            )
        vocab_sizes.add(term.vocab_size)
    if len(vocab_sizes) > 1:
        raise ValueError(
            "Expected one `vocab_size` across the token terms, to cut the "
            "teacher's logits to before its top-k. Received: "
            f"vocab_size values {sorted(vocab_sizes, key=str)}"
        )
    return vocab_sizes.pop() if vocab_sizes else None
