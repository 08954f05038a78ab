"""Checks of the data given to `Distiller.fit`, run before training starts.

Each check raises a `ValueError` that says what was expected and what was
received, naming the sample where that helps. They cover what can be checked
without a pass over a stream: NumPy arrays (inputs, labels, sample weights,
cached teacher outputs) completely, and `tf.data.Dataset`s only by their
declared size. Datasets are watched during training instead, by
`kdkeras.callbacks.TerminateOnNonFinite`.
"""

import numpy as np

from kdkeras.distill import indices as indices_lib
from kdkeras.distill import teacher_cache as cache_lib
from kdkeras.distill import views as views_lib
from kdkeras.distill.callbacks import TerminateOnNonFinite

__all__ = [
    "check_finite",
    "check_fit_data",
    "check_labels",
    "check_not_empty",
    "check_validation_data",
    "fit_with_checks",
]


def _leaves(value):
    import keras

    return [leaf for leaf in keras.tree.flatten(value) if leaf is not None]


def _is_array(value):
    return isinstance(value, np.ndarray) or (
        hasattr(value, "__array__")
        and hasattr(value, "shape")
        and hasattr(value, "dtype")
        and not _is_tensor(value)
    )


def _is_tensor(value):
    module = type(value).__module__ or ""
    return module.startswith("tensorflow")


def _is_dataset(value):
    module = type(value).__module__ or ""
    return module.startswith("tensorflow") and hasattr(value, "cardinality")


def check_finite(value, name):
    """Raises a `ValueError` naming the first sample holding NaN or Inf.

    Args:
        value: a NumPy array or a nested structure of arrays; arrays that are
            not floating point are skipped.
        name: what the value is, for the message (`"x"`, `"teacher outputs"`).

    Raises:
        ValueError: when a floating-point array holds NaN or Inf.
    """
    for leaf in _leaves(value):
        if not _is_array(leaf):
            continue
        array = np.asarray(leaf)
        if not np.issubdtype(array.dtype, np.floating) or array.size == 0:
            continue
        finite = np.isfinite(array)
        if finite.all():
            continue
        bad = ~finite.reshape(len(array), -1).all(axis=1) if array.ndim else ~finite
        index = int(np.argmax(bad)) if array.ndim else 0
        kinds = " and ".join(
            kind
            for kind, present in (("NaN", np.isnan(array).any()), ("Inf", np.isinf(array).any()))
            if present
        )
        raise ValueError(
            f"Expected finite values in {name}. Received: {name} with "
            f"{int(bad.sum())} sample(s) holding {kinds}, the first at index "
            f"{index}. Clean or drop those samples before training."
        )


def _sample_count(value, name):
    leaves = [leaf for leaf in _leaves(value) if _is_array(leaf)]
    counts = {len(leaf) for leaf in leaves if np.ndim(leaf) > 0}
    if len(counts) > 1:
        raise ValueError(
            f"Expected every array of {name} to have the same number of "
            f"samples. Received lengths {sorted(counts)}"
        )
    return counts.pop() if counts else None


def check_not_empty(x, name="x"):
    """Raises a `ValueError` for arrays with no sample or an empty dataset.

    A `tf.data.Dataset` is checked by its declared cardinality only; a
    dataset of unknown size that yields nothing is reported by `fit` after
    the epoch ran no step.
    """
    if _is_dataset(x):
        if int(x.cardinality()) == 0:
            raise ValueError(
                f"Expected a non-empty dataset. Received: {name}, a "
                "tf.data.Dataset with no batches (cardinality 0)"
            )
        return
    count = _sample_count(x, name)
    if count == 0:
        raise ValueError(f"Expected at least one sample. Received: {name} with 0 samples")


def _output_classes(model):
    outputs = getattr(model, "outputs", None)
    if not outputs or len(outputs) != 1:
        return None
    shape = tuple(outputs[0].shape)
    if len(shape) < 2 or shape[-1] in (None, 1):
        return None
    return int(shape[-1]), len(shape)


def check_labels(student, y, name="y"):
    """Integer labels must index the student's outputs: `0 <= y < classes`.

    Checked for a single-output student whose last axis has size > 1, with
    integer labels of one axis fewer than its output (sparse labels);
    one-hot and float labels are left to the loss.

    Raises:
        ValueError: naming the first label out of range.
    """
    if y is None or not _is_array(y):
        return
    labels = np.asarray(y)
    if not np.issubdtype(labels.dtype, np.integer) or labels.size == 0:
        return
    info = _output_classes(student)
    if info is None:
        return
    classes, rank = info
    if labels.ndim == rank and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.ndim != rank - 1:
        return
    bad = (labels < 0) | (labels >= classes)
    if bad.any():
        flat = bad.reshape(len(labels), -1).any(axis=1) if labels.ndim > 1 else bad
        index = int(np.argmax(flat))
        value = labels[index] if labels.ndim == 1 else labels[index][bad[index]].flat[0]
        raise ValueError(
            f"Expected integer labels in [0, {classes}) for the student's "
            f"{classes} outputs. Received: {name}[{index}]={int(value)} "
            f"({int(flat.sum())} sample(s) out of range; labels span "
            f"{int(labels.min())}..{int(labels.max())})"
        )


def check_fit_data(distiller, x, y=None, sample_weight=None, name="x"):
    """All array checks for one `(x, y, sample_weight)` given to `fit`.

    Args:
        distiller: the `Distiller` (its student decides the label range).
        x: inputs, cached inputs (`cache_teacher_outputs`) or a dataset.
        y: labels or `None`.
        sample_weight: sample weights or `None`.
        name: the argument name for messages. Defaults to `"x"`.

    Raises:
        ValueError: empty data, NaN/Inf in inputs, labels, sample weights or
            cached teacher outputs, labels out of range.
    """
    check_not_empty(x, name)
    if _is_dataset(x):
        return
    x = indices_lib.unpack(x)[0]
    inputs, targets = cache_lib.unpack(x) if isinstance(x, dict) else (x, None)
    if sample_weight is None:  # unlabeled weights travel packed with the inputs
        sample_weight = cache_lib.packed_sample_weight(x)
    check_finite(inputs, name)
    if targets is not None:
        views = getattr(distiller, "augment", None), getattr(distiller, "mixup", None)
        if name == "x" and any(v is not None for v in views):
            raise ValueError(views_lib.CACHE_MESSAGE + f" Received: cached inputs for {name}")
        check_finite(targets, "the cached teacher outputs")
    if y is not None:
        check_finite(y, "y")
        check_labels(distiller.student, y)
    if sample_weight is not None:
        check_finite(sample_weight, "sample_weight")
        for leaf in _leaves(sample_weight):
            if _is_array(leaf) and np.size(leaf) and np.min(leaf) < 0:
                raise ValueError(
                    "Expected sample weights >= 0. Received: sample_weight with "
                    f"minimum {float(np.min(leaf))}"
                )


def check_validation_data(distiller, validation_data):
    """`check_fit_data` for `fit(validation_data=...)`."""
    if validation_data is None:
        return
    if isinstance(validation_data, tuple) and 1 <= len(validation_data) <= 3:
        parts = list(validation_data) + [None] * (3 - len(validation_data))
        check_fit_data(distiller, parts[0], parts[1], parts[2], "validation_data")
    else:
        check_not_empty(validation_data, "validation_data")


def _has_nan_guard(callbacks):
    import keras

    items = getattr(callbacks, "callbacks", callbacks) or []
    return any(isinstance(c, (TerminateOnNonFinite, keras.callbacks.TerminateOnNaN)) for c in items)


def fit_with_checks(fit, distiller, *args, **kwargs):
    """Runs `fit(*args, **kwargs)` after checking its data (see module doc).

    `fit` is the bound `keras.Model.fit` of `distiller`. Adds a
    `kdkeras.callbacks.TerminateOnNonFinite` to the callbacks unless they
    already hold one (or a `keras.callbacks.TerminateOnNaN`).
    """
    import inspect

    bound = inspect.signature(fit).bind(*args, **kwargs)
    arguments = bound.arguments
    check_fit_data(
        distiller,
        arguments.get("x"),
        arguments.get("y"),
        arguments.get("sample_weight"),
    )
    check_validation_data(distiller, arguments.get("validation_data"))
    callbacks = arguments.get("callbacks")
    if not _has_nan_guard(callbacks):
        if callbacks is None:
            arguments["callbacks"] = [TerminateOnNonFinite()]
        elif isinstance(callbacks, (list, tuple)):
            arguments["callbacks"] = [*callbacks, TerminateOnNonFinite()]
        else:  # a keras.callbacks.CallbackList
            arguments["callbacks"] = [*callbacks.callbacks, TerminateOnNonFinite()]
    return fit(*bound.args, **bound.kwargs)
