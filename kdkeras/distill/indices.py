"""Dataset indices: each training sample's position, carried with the sample.

Terms with per-sample state (CRD's memory banks) ask for the dataset index
of every sample of a batch (`needs_indices`). Like cached teacher outputs
(`teacher_cache`), indices travel inside the inputs, so they follow the
samples wherever `fit` shuffles them: indexed inputs are a dict with the
reserved keys `INPUTS_KEY` (the model inputs) and `INDICES_KEY` (one
integer per sample, `0 .. n - 1`); cached inputs get `INDICES_KEY` added
beside their two keys.

`Distiller.fit` indexes NumPy inputs itself. A `tf.data.Dataset` must carry
the indices: `with_indices(dataset)` on the unbatched, unshuffled dataset
(then shuffle and batch), or any pipeline whose `x` is `{INPUTS_KEY: x,
INDICES_KEY: index}`.
"""

import numpy as np

from kdkeras.distill import teacher_cache as cache_lib

__all__ = ["INDICES_KEY", "INPUTS_KEY", "has_indices", "index_fit_inputs", "unpack", "with_indices"]

INDICES_KEY = "kdkeras_indices"
INPUTS_KEY = cache_lib.INPUTS_KEY


def has_indices(x):
    return isinstance(x, dict) and INDICES_KEY in x


def unpack(x):
    """`(inputs, indices)` from indexed inputs, `(x, None)` otherwise.

    `inputs` keeps cached teacher outputs (a dict with `TARGETS_KEY`) as
    they are.
    """
    if not has_indices(x):
        return x, None
    rest = {key: value for key, value in x.items() if key != INDICES_KEY}
    if set(rest) == {INPUTS_KEY}:
        rest = rest[INPUTS_KEY]
    return rest, x[INDICES_KEY]


def _is_dataset(x):
    module = type(x).__module__ or ""
    return module.startswith("tensorflow") and hasattr(x, "element_spec")


def _attach(x, indices):
    if isinstance(x, dict) and cache_lib.is_cached(x):
        return {**x, INDICES_KEY: indices}
    return {INPUTS_KEY: x, INDICES_KEY: indices}


def _sample_count(x):
    import keras

    leaves = [leaf for leaf in keras.tree.flatten(x) if leaf is not None]
    counts = {len(leaf) for leaf in leaves if np.ndim(leaf) > 0}
    return counts.pop() if len(counts) == 1 else None


def with_indices(x):
    """Inputs that carry the dataset index of every sample.

    Args:
        x: NumPy inputs (an array, or a dict/list of them), inputs returned
            by `Distiller.cache_teacher_outputs`, or an *unbatched*
            `tf.data.Dataset` of `x`, `(x, y)` or `(x, y, sample_weight)`
            elements in a fixed order (index it before shuffling and
            batching: `with_indices(ds).shuffle(n).batch(64)`).

    Returns:
        For arrays, `{INPUTS_KEY: x, INDICES_KEY: np.arange(n)}` (cached
        inputs get `INDICES_KEY` added); for a dataset, the same elements
        with `x` replaced by that dict.
    """
    if _is_dataset(x):

        def attach(index, element):
            if isinstance(element, tuple):
                return (_attach(element[0], index),) + element[1:]
            return _attach(element, index)

        return x.enumerate().map(attach)
    if has_indices(x):
        return x
    count = _sample_count(x)
    if count is None:
        raise ValueError(
            "Expected NumPy inputs whose arrays all have the same number of "
            f"samples, cached inputs or an unbatched tf.data.Dataset. Received: x={x!r:.200}"
        )
    return _attach(x, np.arange(count, dtype="int64"))


def _check_range(indices, limit, owner):
    indices = np.asarray(indices)
    if indices.size and (indices.min() < 0 or indices.max() >= limit):
        raise ValueError(
            f"Expected dataset indices in [0, {limit}) for {owner}, whose memory "
            f"has one row per training sample (num_samples={limit}). Received: "
            f"indices from {int(indices.min())} to {int(indices.max())}"
        )


def _spec_has_indices(element_spec):
    x_spec = element_spec[0] if isinstance(element_spec, tuple) else element_spec
    return has_indices(x_spec)


def index_fit_inputs(x, terms):
    """The `x` to train on when some of `terms` need dataset indices.

    NumPy inputs get indices (`with_indices`), checked against every term's
    `num_samples`; inputs that carry indices are checked; a
    `tf.data.Dataset` without them is refused now, with the fix. Other
    inputs (generators, `PyDataset`) are left to the training step, which
    fails on the first batch without indices.
    """
    needing = [t for t in terms if getattr(t, "needs_indices", False)]
    if x is None or not needing:
        return x
    limits = [
        (t.num_samples, type(t).__name__)
        for t in needing
        if isinstance(getattr(t, "num_samples", None), int)
    ]
    names = ", ".join(type(t).__name__ for t in needing)
    if _is_dataset(x):
        if not _spec_has_indices(x.element_spec):
            raise ValueError(
                f"Expected a dataset that carries the dataset index of every sample: "
                f"{names} needs them (needs_indices). Index the unbatched dataset "
                "before shuffling and batching, kdkeras.distill.with_indices(ds)"
                ".shuffle(n).batch(b), or yield x as {INPUTS_KEY: x, INDICES_KEY: "
                f"index}} with INPUTS_KEY={INPUTS_KEY!r}, INDICES_KEY={INDICES_KEY!r}. "
                f"Received: a dataset with element_spec={x.element_spec}"
            )
        return x
    if has_indices(x):
        for limit, owner in limits:
            _check_range(x[INDICES_KEY], limit, owner)
        return x
    if isinstance(x, (np.ndarray, dict, list, tuple)) or hasattr(x, "__array__"):
        x = with_indices(x)
        for limit, owner in limits:
            _check_range(x[INDICES_KEY], limit, owner)
    return x
