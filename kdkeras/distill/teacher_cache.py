"""Teacher-output cache: run the teacher once, reuse its targets every epoch.

Cached inputs are a dict with two reserved keys: `INPUTS_KEY` holds the
model inputs, `TARGETS_KEY` the teacher's targets for the same samples. The
`Distiller` recognises the structure and skips the teacher.
"""

import numpy as np

from kdkeras.utils import keras_compat

__all__ = [
    "INPUTS_KEY",
    "TARGETS_KEY",
    "cache_teacher_outputs",
    "is_cached",
    "nondeterministic_ops",
    "unpack",
    "unpack_inputs",
]

INPUTS_KEY = "kdkeras_inputs"
TARGETS_KEY = "kdkeras_teacher_outputs"

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


def is_cached(x):
    return isinstance(x, dict) and TARGETS_KEY in x and INPUTS_KEY in x


def unpack(x):
    """`(inputs, targets)` from cached inputs, `(x, None)` otherwise."""
    if is_cached(x):
        return x[INPUTS_KEY], x[TARGETS_KEY]
    return x, None


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


def _teacher_fn(distiller):
    import tensorflow as tf

    return tf.function(distiller.compute_teacher_outputs, reduce_retracing=True)


def cache_teacher_outputs(distiller, x, batch_size=256):
    """See `Distiller.cache_teacher_outputs`."""
    import keras
    import tensorflow as tf

    if is_cached(x):
        raise ValueError(
            "Expected inputs without cached teacher outputs. Received inputs "
            "that already carry them."
        )
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(
            f"Expected `batch_size` to be an integer >= 1. Received: batch_size={batch_size!r}"
        )
    compute = _teacher_fn(distiller)
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
