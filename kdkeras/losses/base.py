"""The base class of every kdkeras distillation term, and its reduction."""

import math

import keras
from keras import ops

__all__ = [
    "DistillationLoss",
    "WrongTypeError",
    "is_finite_number",
    "reduce_per_sample",
    "reduce_per_token",
    "token_count",
]

try:  # keras >= 3.12
    from keras.distillation import DistillationLoss as _KerasDistillationLoss
except ImportError:  # pragma: no cover - guarded by the keras>=3.12 pin
    _KerasDistillationLoss = object


class WrongTypeError(TypeError, ValueError):
    """An argument of the wrong type: a `TypeError` that is also a `ValueError`.

    `keras.distillation` raises `ValueError` for some arguments of the wrong
    type (a teacher that is no `keras.Model`, ...); kdkeras raises this for
    them, so code written against either library catches it.
    """


def is_finite_number(value):
    """Whether `value` is a finite int or float (a bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _broadcast_weight(values, sample_weight):
    """`sample_weight` as float32 with the rank of `values` (trailing axes added or dropped)."""
    sample_weight = ops.cast(sample_weight, "float32")
    while len(sample_weight.shape) > len(values.shape):
        if sample_weight.shape[-1] not in (1, None):
            raise ValueError(
                "Expected `sample_weight` broadcastable to this term's "
                f"per-sample values of shape {tuple(values.shape)} (a term "
                "that reduces features to one value per sample takes "
                "(batch,) weights, not a per-step mask). Received: "
                f"sample_weight.shape={tuple(sample_weight.shape)}"
            )
        sample_weight = ops.squeeze(sample_weight, axis=-1)
    while len(sample_weight.shape) < len(values.shape):
        sample_weight = ops.expand_dims(sample_weight, axis=-1)
    return sample_weight


def reduce_per_sample(values, sample_weight=None):
    """Weighted mean of per-sample loss values, as Keras's losses reduce them.

    Matches `reduction="sum_over_batch_size"`: `sum(values * sample_weight)`
    divided by the number of elements of `values` (not by the sum of the
    weights), so that a padding mask down-weights padded positions and a
    batch split across replicas sums back to the single-device value.

    Args:
        values: per-sample loss values, shape `(batch, ...)`.
        sample_weight: `None`, or weights broadcastable to `values` after
            trailing axes are added or size-1 trailing axes are dropped
            (`(batch,)`, `(batch, 1)` or `values.shape`).

    Returns:
        A float32 scalar.
    """
    values = ops.cast(values, "float32")
    if sample_weight is not None:
        values = values * _broadcast_weight(values, sample_weight)
    count = ops.cast(ops.size(values), "float32")
    return ops.divide_no_nan(ops.sum(values), count)


def token_count(values, sample_weight=None):
    """The number of real tokens among per-token `values`: those of non-zero weight.

    Args:
        values: per-token loss values, shape `(batch, time)`.
        sample_weight: `None` (every token is real), or weights of shape
            `(batch,)`, `(batch, 1)` or `(batch, time)`; zero marks padding.

    Returns:
        A float32 scalar.
    """
    values = ops.convert_to_tensor(values)
    if sample_weight is None:
        return ops.cast(ops.size(values), "float32")
    weight = _broadcast_weight(values, sample_weight)
    real = ops.cast(ops.not_equal(weight, 0.0), "float32")
    return ops.sum(real * ops.ones_like(ops.cast(values, "float32")))


def reduce_per_token(values, sample_weight=None, count=None):
    """Mean of per-token loss values over the real tokens of the whole batch.

    `sum(values * sample_weight) / count`, where `count` is the number of
    tokens of non-zero weight in the batch (`token_count`). With a 0/1
    padding mask that is the mean over real tokens, each token counting
    once: not a mean of per-sequence means, which would overweight the
    tokens of short sequences. Padded positions are left out with `where`,
    so whatever they hold (even NaN) reaches neither the value nor the
    gradient.

    Args:
        values: per-token loss values, shape `(batch, time)`.
        sample_weight: `None`, or weights of shape `(batch,)`, `(batch, 1)`
            or `(batch, time)`; zero marks padding.
        count: the token count to divide by. Defaults to `token_count(values,
            sample_weight)`. The `Distiller` passes the count of the global
            batch divided by the number of replicas of a `tf.distribute`
            strategy, so that replicas holding different numbers of real
            tokens add up to the single-device value.

    Returns:
        A float32 scalar (0 for a batch without real tokens).
    """
    values = ops.cast(values, "float32")
    if count is None:
        count = token_count(values, sample_weight)
    if sample_weight is not None:
        weight = _broadcast_weight(values, sample_weight) * ops.ones_like(values)
        values = ops.where(ops.not_equal(weight, 0.0), values * weight, 0.0)
    return ops.divide_no_nan(ops.sum(values), ops.cast(count, "float32"))


class DistillationLoss(_KerasDistillationLoss):
    """Base class of a kdkeras distillation term.

    A term compares the teacher's outputs (or tapped features) with the
    student's. Subclasses implement `call(teacher_outputs, student_outputs,
    y=None)` returning per-sample values of shape `(batch, ...)`; the
    `Distiller` weights them by `sample_weight` and reduces them, so every
    term honours sample weights and padding masks for free. `compute_loss`
    keeps the signature of `keras.distillation.DistillationLoss`, so a
    kdkeras term also works inside `keras.distillation.Distiller`.

    Terms that read intermediate layers set `teacher_layer_name` and
    `student_layer_name`; output terms leave both `None`.

    Terms with heads and state (`kdkeras.CRD`) use an optional protocol;
    every part defaults to "nothing", so other terms ignore it:

    - `build(teacher_shape, student_shape)`: called once by the `Distiller`
      when it is constructed (inside its `tf.distribute` scope), with the
      shapes of the features the term will receive (batch axis `None`; the
      student's after its adapter). Create and build layers and variables
      here, and set `self.built = True` (the base method does).
    - `layers`: the Keras layers the term owns. The `Distiller` tracks them
      like adapters: their trainable variables train with the student (its
      optimizer, its gradient step), every variable is saved with the
      Distiller (`distiller.save`, `BackupAndRestore`) and none with the
      student.
    - `call(..., training=False)`: a `call` that accepts `training` gets
      `True` in `fit` and `False` in `evaluate`. The `Distiller` calls each
      term exactly once per step, inside the compiled step, so a term
      updates its non-trainable state there when `training` is true (as
      `BatchNormalization` does).
    - `needs_indices = True`: `call` also gets `indices=`, the dataset index
      of every sample of the batch, `(batch,)` integers (see `Distiller.fit`
      for where they come from).
    - `needs_global_batch = True`: the value relates the samples of a batch
      to each other (RKD, PKT, SP, DIST's intra-class part) or updates state
      from the whole batch (CRD). Under a `tf.distribute` strategy, the
      `Distiller` then gathers the term's inputs from every replica, so each
      replica computes the term on the global batch: the value, its
      gradients and every state update equal those of one device.

    `reduction` says how the `Distiller` reduces the values:
    `"sum_over_batch_size"` (`reduce_per_sample`, Keras's default) or
    `"sum_over_tokens"` (`reduce_per_token`, the language-model terms of
    `kdkeras.losses.tokens`, whose `call` also takes `mask=`).

    Args:
        name: the name under which the term is logged during `fit`.
            Defaults to the snake-case class name plus `"_loss"`.
    """

    name = None
    teacher_layer_name = None
    student_layer_name = None
    needs_indices = False
    needs_global_batch = False
    built = False
    reduction = "sum_over_batch_size"

    def __init__(self, name=None):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Expected `name` to be a string or None. Received: name={name!r}")
        self.name = name

    def build(self, teacher_shape, student_shape):
        """Creates the term's layers and state for features of these shapes."""
        self.built = True

    @property
    def layers(self):
        """The Keras layers (heads, state) this term owns; none by default."""
        return []

    def call(self, teacher_outputs, student_outputs, y=None):
        raise NotImplementedError(
            f"{type(self).__name__} must implement "
            "`call(teacher_outputs, student_outputs, y=None)`."
        )

    def compute_loss(self, teacher_outputs, student_outputs, sample_weight=None, y=None, **kwargs):
        """Returns the weighted mean of `call(...)` as a float32 scalar."""
        return reduce_per_sample(self.call(teacher_outputs, student_outputs, y=y), sample_weight)

    def validate_outputs(self, teacher_outputs, student_outputs):
        keras.tree.assert_same_structure(teacher_outputs, student_outputs)

    def get_config(self):
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
