"""A narrow fix that lets `Model.fit` run under `MultiWorkerMirroredStrategy`.

Keras 3 (checked up to 3.15.1) fails under
`tf.distribute.MultiWorkerMirroredStrategy` for every model, not only for a
`Distiller` (https://github.com/keras-team/keras/issues/20585). Two code paths
of `keras/src/backend/tensorflow/trainer.py` are at fault:

1. `TensorFlowTrainer._maybe_symbolic_build` reduces the first distributed
   batch with `strategy.reduce("MEAN", batch, axis=None)` to learn its shapes.
   Outside a `tf.function` the multi-worker strategy cannot reduce a
   `PerReplica` batch: "Attempt to convert a value (PerReplica...) with an
   unsupported type". Only shapes and dtypes are needed, so the fix takes
   this worker's first local replica value instead.
2. `reduce_per_replica(..., reduction="mean")` reduces every log value with
   `strategy.reduce("MEAN", value, axis=0)`; the logs are scalars, so every
   step fails with "Invalid reduction dimension 0". The fix reduces scalars
   with `axis=None` (the mean across replicas, as on a single worker).

Both replacements hand every call to the original Keras code unless the
strategy is a `MultiWorkerMirroredStrategy` running in multi-worker mode, and
they are installed only for the Keras versions known to be affected
(`AFFECTED_KERAS`). `Distiller` installs them when it is built under such a
strategy; other models (a student trained alone, as a baseline) call
`kdkeras.enable_multi_worker_fit()`.

Remove this module once the Keras issue is fixed: set the upper bound of
`AFFECTED_KERAS` to the first fixed release, and delete it when kdkeras
requires that release.
"""

import threading

from kdkeras.utils import keras_compat

__all__ = [
    "AFFECTED_KERAS",
    "disable_multi_worker_fit",
    "enable_for_current_strategy",
    "enable_multi_worker_fit",
    "is_affected_keras",
    "is_enabled",
    "is_multi_worker",
    "local_tf_configs",
]

# Half-open range of affected `keras.version()`s: [first, last_exclusive).
# Raise the upper bound when a newer Keras is confirmed to still fail
# (tests/test_multiworker.py shows it); lower it to the release with the fix.
AFFECTED_KERAS = ((3, 0), (3, 16))

_lock = threading.Lock()
_originals = {}


def is_affected_keras(version=None):
    """Whether `version` (default: the installed Keras) needs the fix."""
    version = keras_compat.keras_version() if version is None else tuple(version)[:2]
    first, last_exclusive = AFFECTED_KERAS
    return first <= version < last_exclusive


def is_multi_worker(strategy):
    """Whether `strategy` is a `MultiWorkerMirroredStrategy` across several workers."""
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    return keras_compat.in_multi_worker_mode(strategy)


def _local_value(strategy, value):
    import tensorflow as tf

    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    strategy = self.distribute_strategy
    if strategy is None or iterator is None or not is_multi_worker(strategy):
        return _originals["maybe_symbolic_build"](self, iterator=iterator, data_batch=data_batch)
    import keras

    # keras-team/keras#20585, path 1: the batch only lends its shapes and
    # dtypes to the symbolic build, so this worker's own replica will do.
    for _, _, it in iterator:
        data_batch = keras.tree.map_structure(lambda v: _local_value(strategy, v), next(it))
        break
    with strategy.scope():
        keras_compat.symbolic_build(self, data_batch)


def _is_scalar(strategy, value):
    local = _local_value(strategy, value)
    shape = getattr(local, "shape", None)
    return shape is not None and shape.rank == 0


def _reduce_per_replica(values, strategy, reduction):
    original = _originals["reduce_per_replica"]
    if reduction not in ("auto", "mean") or not is_multi_worker(strategy):
        return original(values, strategy, reduction)
    import keras

    def reduce(value):
        # keras-team/keras#20585, path 2: Keras reduces with axis=0, which
        # a scalar log value does not have.
        if _is_scalar(strategy, value):
            return strategy.reduce("MEAN", value, axis=None)
        return original(value, strategy, reduction)

    return keras.tree.map_structure(reduce, values)


def enable_multi_worker_fit():
    """Lets `fit`/`evaluate` run under `tf.distribute.MultiWorkerMirroredStrategy`.

    Keras 3 up to at least 3.15.1 fails under that strategy for every model
    (https://github.com/keras-team/keras/issues/20585). This installs a
    narrow, version-guarded fix of the two Keras code paths at fault; the
    fixed functions behave exactly as before for every other strategy.
    `kdkeras.Distiller` calls it when it is built under a multi-worker
    strategy: call it yourself only to train another model (a baseline
    student) under one. Calling it again does nothing.

    Returns:
        `True` when the fix is installed, `False` when the installed Keras is
        outside the affected versions (nothing is changed).

    Example:

    ```python
    kdkeras.enable_multi_worker_fit()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = make_model()
        model.compile(...)
    model.fit(x, y)
    ```
    """
    if not is_affected_keras():
        return False
    with _lock:
        if _originals:
            return True
        build, reduce = keras_compat.swap_trainer_functions(
            _maybe_symbolic_build, _reduce_per_replica
        )
        _originals["maybe_symbolic_build"] = build
        _originals["reduce_per_replica"] = reduce
    return True


def disable_multi_worker_fit():
    """Restores the original Keras code (for tests)."""
    with _lock:
        if not _originals:
            return
        keras_compat.swap_trainer_functions(
            _originals.pop("maybe_symbolic_build"), _originals.pop("reduce_per_replica")
        )


def is_enabled():
    """Whether the fix is installed."""
    return bool(_originals)


def enable_for_current_strategy():
    """Installs the fix when the strategy in scope is multi-worker."""
    import tensorflow as tf

    if tf.distribute.has_strategy() and is_multi_worker(tf.distribute.get_strategy()):
        return enable_multi_worker_fit()
    return False


def local_tf_configs(workers, host="127.0.0.1"):
    """One `TF_CONFIG` dict per worker of a cluster on this machine, on free ports.

    For trying multi-worker training on one machine (tests, the
    multi-worker recipe): start one process per dict, each with
    `TF_CONFIG=json.dumps(config)` in its environment.
    """
    import socket

    sockets = []
    for _ in range(workers):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((host, 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    cluster = {"worker": [f"{host}:{port}" for port in ports]}
    return [
        {"cluster": cluster, "task": {"type": "worker", "index": index}} for index in range(workers)
    ]
