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
(`_AFFECTED_KERAS`). `Distiller` installs them when it is built under such a
strategy; other models (a student trained alone, as a baseline) call
`kdkeras.enable_multi_worker_fit()`.

Remove this module once the Keras issue is fixed: set the upper bound of
`_AFFECTED_KERAS` to the first fixed release, and delete it when kdkeras
requires that release.
"""

import threading

# Half-open range of affected `keras.version()`s: [first, last_exclusive).
# Raise the upper bound when a newer Keras is confirmed to still fail
# (tests/test_multiworker.py shows it); lower it to the release with the fix.
_AFFECTED_KERAS = ((3, 0), (3, 16))

_lock = threading.Lock()
_originals = {}


def _keras_version():
    import keras

    parts = []
    for piece in keras.version().split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def is_affected_keras(version=None):
    """Whether `version` (default: the installed Keras) needs the fix."""
    version = _keras_version() if version is None else tuple(version)[:2]
    first, last_exclusive = _AFFECTED_KERAS
    return first <= version < last_exclusive


def _is_multi_worker(strategy):
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    in_multi_worker_mode = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return bool(in_multi_worker_mode()) if callable(in_multi_worker_mode) else True


def _local_value(strategy, value):
    import tensorflow as tf

    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    strategy = self._distribute_strategy
    if strategy is None or iterator is None or not _is_multi_worker(strategy):
        return _originals["_maybe_symbolic_build"](
            self, iterator=iterator, data_batch=data_batch
        )
    import keras

    # keras-team/keras#20585, path 1: the batch only lends its shapes and
    # dtypes to the symbolic build, so this worker's own replica will do.
    for _, _, it in iterator:
        data_batch = keras.tree.map_structure(
            lambda v: _local_value(strategy, v), next(it)
        )
        break
    with strategy.scope():
        self._symbolic_build(data_batch=data_batch)


def _is_scalar(strategy, value):
    local = _local_value(strategy, value)
    shape = getattr(local, "shape", None)
    return shape is not None and shape.rank == 0


def _reduce_per_replica(values, strategy, reduction):
    original = _originals["reduce_per_replica"]
    if reduction not in ("auto", "mean") or not _is_multi_worker(strategy):
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
        from keras.src.backend.tensorflow import trainer as tf_trainer

        trainer_cls = tf_trainer.TensorFlowTrainer
        _originals["_maybe_symbolic_build"] = trainer_cls._maybe_symbolic_build
        _originals["reduce_per_replica"] = tf_trainer.reduce_per_replica
        trainer_cls._maybe_symbolic_build = _maybe_symbolic_build
        # The train/test functions look the name up in the module at call time.
        tf_trainer.reduce_per_replica = _reduce_per_replica
    return True


def disable_multi_worker_fit():
    """Restores the original Keras code (for tests)."""
    with _lock:
        if not _originals:
            return
        from keras.src.backend.tensorflow import trainer as tf_trainer

        tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _originals.pop(
            "_maybe_symbolic_build"
        )
        tf_trainer.reduce_per_replica = _originals.pop("reduce_per_replica")


def enable_for_current_strategy():
    """Installs the fix when the strategy in scope is multi-worker."""
    import tensorflow as tf

    if tf.distribute.has_strategy() and _is_multi_worker(tf.distribute.get_strategy()):
        return enable_multi_worker_fit()
    return False
