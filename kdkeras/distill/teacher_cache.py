"""Teacher-output cache: run the teacher once, reuse its targets every epoch.

Cached inputs are a dict with reserved keys: `INPUTS_KEY` holds the model
inputs, `TARGETS_KEY` the teacher's targets for the same samples. The
`Distiller` recognises the structure and skips the teacher. The same
packing carries the sample weights of unlabeled data (`SAMPLE_WEIGHT_KEY`):
Keras drops `sample_weight` when `y` is `None`, so `Distiller.fit(x,
sample_weight=w)` moves them into the inputs, where they travel with their
samples through shuffling and splitting.

With `top_k=k`, sequence targets are stored as the teacher's `k` most
likely token ids and their log-probabilities per position
(`kdkeras.losses.top_k_targets`) instead of the whole vocabulary.
"""

import numpy as np

from kdkeras.utils import keras_compat

__all__ = [
    "INPUTS_KEY",
    "SAMPLE_WEIGHT_KEY",
    "TARGETS_KEY",
    "cache_teacher_outputs",
    "is_cached",
    "is_packed",
    "nondeterministic_ops",
    "pack_sample_weight",
    "packed_sample_weight",
    "unpack",
    "unpack_inputs",
]

INPUTS_KEY = "kdkeras_inputs"
TARGETS_KEY = "kdkeras_teacher_outputs"
SAMPLE_WEIGHT_KEY = "kdkeras_sample_weight"
_KEYS = {INPUTS_KEY, TARGETS_KEY, SAMPLE_WEIGHT_KEY}

# tf.data ops that make an epoch's batches differ from the previous epoch's.
_NONDETERMINISTIC_DATASET_OPS = (
    "ShuffleDataset",
    "ShuffleDatasetV2",
    "ShuffleDatasetV3",
    "ShuffleAndRepeatDataset",
    "ShuffleAndRepeatDatasetV2",
    "SamplingDataset",
    "DirectedInterleaveDataset",
)


def is_packed(x):
    """Whether `x` is inputs packed with cached targets and/or sample weights."""
    return isinstance(x, dict) and INPUTS_KEY in x and set(x) <= _KEYS


def is_cached(x):
    return is_packed(x) and TARGETS_KEY in x


def unpack(x):
    """`(inputs, targets)` from packed inputs (targets `None` if not cached), `(x, None)` otherwise."""
    if is_packed(x):
        return x[INPUTS_KEY], x.get(TARGETS_KEY)
    return x, None


def packed_sample_weight(x):
    """The sample weights packed with the inputs (`pack_sample_weight`), or `None`."""
    return x.get(SAMPLE_WEIGHT_KEY) if is_packed(x) else None


def pack_sample_weight(x, sample_weight):
    """Inputs that carry `sample_weight` with them, for data without labels.

    Args:
        x: inputs (arrays or a structure of them), possibly already cached.
        sample_weight: per-sample `(n,)` or per-token `(n, steps)` weights.

    Returns:
        A dict the `Distiller` unpacks in its step into inputs, cached
        targets and sample weights.
    """
    packed = dict(x) if is_packed(x) else {INPUTS_KEY: x}
    if SAMPLE_WEIGHT_KEY in packed:
        raise ValueError(
            "Expected inputs without packed sample weights. Received: inputs "
            "that already carry them, and sample_weight"
        )
    packed[SAMPLE_WEIGHT_KEY] = sample_weight
    return packed


def unpack_inputs(x):
    return unpack(x)[0]


def _dataset_graph_nodes(dataset):
    """Nodes of a dataset's graph, functions (map bodies) included."""
    graph_def = keras_compat.dataset_graph_def(dataset)
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    return nodes


def nondeterministic_ops(dataset):
    """The ops of `dataset` that change its batches from epoch to epoch.

    Shuffling and sampling ops, random-number ops (augmentation), and
    parallel ops allowed to reorder elements (`deterministic=False` on the
    op, or in the dataset's options).
    """
    bad = set()
    for node in _dataset_graph_nodes(dataset):
        if node.op in _NONDETERMINISTIC_DATASET_OPS or "Random" in node.op:
            bad.add(node.op)
        flag = node.attr["deterministic"].s if "deterministic" in node.attr else b""
        if flag == b"false":
            bad.add(f"{node.op}(deterministic=False)")
    if dataset.options().deterministic is False:
        bad.add("options.deterministic=False")
    return sorted(bad)


def _numpy_tree(structure):
    import keras

    return keras.tree.map_structure(lambda v: np.asarray(v), structure)


def _concat_batches(batches):
    import keras

    return keras.tree.map_structure(
        lambda *parts: np.concatenate([np.asarray(p) for p in parts], axis=0),
        *batches,
    )


def _teacher_fn(distiller, top_k=None, vocab_size=None):
    import tensorflow as tf

    def compute(x):
        return distiller.compute_teacher_outputs(x, top_k=top_k, vocab_size=vocab_size)

    return tf.function(compute, reduce_retracing=True)


def cache_teacher_outputs(distiller, x, batch_size=256, top_k=None, vocab_size=None):
    """See `Distiller.cache_teacher_outputs`.

    `top_k` and `vocab_size` are passed to `distiller.compute_teacher_outputs`.
    """
    import keras
    import tensorflow as tf

    if is_cached(x):
        raise ValueError(
            "Expected inputs without cached teacher outputs. Received inputs "
            "that already carry them."
        )
    if is_packed(x):
        raise ValueError(
            "Expected plain inputs to cache: cache first, then pass the sample "
            "weights to fit(). Received inputs packed with sample weights."
        )
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(
            f"Expected `batch_size` to be an integer >= 1. Received: batch_size={batch_size!r}"
        )
    compute = _teacher_fn(distiller, top_k, vocab_size)
    if isinstance(x, tf.data.Dataset):
        return _cache_dataset(x, compute)

    leaves = keras.tree.flatten(x)
    if not leaves:
        raise ValueError("Expected non-empty inputs. Received: x with no arrays")
    n = len(leaves[0])
    if n == 0:
        raise ValueError("Expected at least one sample. Received: x with 0 samples")
    if any(len(leaf) != n for leaf in leaves):
        raise ValueError(
            "Expected every input array to have the same number of samples. "
            f"Received lengths {[len(leaf) for leaf in leaves]}"
        )
    batches = []
    for start in range(0, n, batch_size):
        chunk = keras.tree.map_structure(
            lambda v: tf.convert_to_tensor(v[start : start + batch_size]),  # noqa: B023
            x,
        )
        batches.append(_numpy_tree(compute(chunk)))
    return {INPUTS_KEY: x, TARGETS_KEY: _concat_batches(batches)}


def _cache_dataset(dataset, compute):
    import keras
    import tensorflow as tf

    bad = nondeterministic_ops(dataset)
    if bad:
        raise ValueError(
            "Cannot cache teacher outputs for a dataset whose batches change "
            "between epochs: cached targets would belong to other samples. "
            f"The dataset contains {bad}. Cache the teacher outputs of the "
            "arrays and let fit() shuffle them (targets stay with their "
            "samples), apply augmentation-free data, or keep the teacher "
            "online. Received: a tf.data.Dataset with shuffling or random ops"
        )
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            "Expected a finite dataset (one epoch) to cache. Received: an "
            "infinite dataset; apply .repeat() after caching"
        )
    batches, sizes = [], []
    for element in dataset:
        x, _, _ = keras.utils.unpack_x_y_sample_weight(element)
        targets = _numpy_tree(compute(x))
        batches.append(targets)
        sizes.append(len(keras.tree.flatten(x)[0]))
    if not batches:
        raise ValueError("Expected a non-empty dataset. Received: a dataset with no batches")
    targets = _concat_batches(batches)
    regular = all(s == sizes[0] for s in sizes[:-1]) and sizes[-1] <= sizes[0]
    if regular:
        target_ds = tf.data.Dataset.from_tensor_slices(targets).batch(sizes[0])
    else:
        target_ds = tf.data.Dataset.from_generator(
            lambda: iter(batches),
            output_signature=keras.tree.map_structure(
                lambda v: tf.TensorSpec((None,) + v.shape[1:], v.dtype), targets
            ),
        )

    def attach(element, target):
        if isinstance(element, tuple):
            return ({INPUTS_KEY: element[0], TARGETS_KEY: target},) + element[1:]
        return {INPUTS_KEY: element, TARGETS_KEY: target}

    return tf.data.Dataset.zip((dataset, target_ds)).map(attach)
