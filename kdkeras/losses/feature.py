"""Feature (intermediate-layer) distillation terms."""

import keras
from keras import ops

from kdkeras.losses.base import DistillationLoss


def _per_sample(values):
    """Mean over every axis but the first: `(batch, ...) -> (batch,)`."""
    if len(values.shape) <= 1:
        return values
    return ops.mean(values, axis=list(range(1, len(values.shape))))


def _resolve_loss(loss):
    """A function `(teacher, student) -> unreduced values` for `loss`."""
    if isinstance(loss, keras.losses.Loss):
        return loss.call
    if isinstance(loss, str):
        fn = keras.losses.get(loss)
        if fn is None:
            raise ValueError(f"Unknown loss. Received: loss={loss!r}")
        return fn
    if callable(loss):
        return loss
    raise ValueError(
        "Expected `loss` to be a loss name such as 'mse', a keras.losses.Loss "
        f"instance or a callable. Received: loss={loss!r}"
    )


@keras.saving.register_keras_serializable(package="kdkeras")
class FeatureDistillation(DistillationLoss):
    """Matches a student layer's output to a teacher layer's output.

    A drop-in for `keras.distillation.FeatureDistillation`: with both layer
    names `None` it compares the final outputs; with names, the `Distiller`
    taps those layers during the single forward pass of each model. This is
    the hint loss of FitNets when the layers are intermediate.

    Args:
        loss: the comparison, `"mse"` by default; any Keras loss name,
            `keras.losses.Loss` instance or callable
            `(teacher_features, student_features) -> values`. Values are
            averaged over every axis but the batch axis.
        teacher_layer_name: name (or the layer object) of the teacher layer
            to tap. `None` taps the final output. Defaults to `None`.
        student_layer_name: name (or the layer object) of the student layer
            to tap. `None` taps the final output. Defaults to `None`.
        name: logged name. Defaults to `"feature_distillation_loss"`.

    Reference:
        Romero et al. FitNets: Hints for Thin Deep Nets. ICLR 2015.
        https://arxiv.org/abs/1412.6550
    """

    def __init__(
        self, loss="mse", teacher_layer_name=None, student_layer_name=None, name=None
    ):
        super().__init__(name=name)
        self.loss = loss
        self._loss_fn = _resolve_loss(loss)
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name

    def call(self, teacher_outputs, student_outputs, y=None):
        flat_t = keras.tree.flatten(teacher_outputs)
        flat_s = keras.tree.flatten(student_outputs)
        values = [
            _per_sample(self._loss_fn(ops.cast(t, "float32"), ops.cast(s, "float32")))
            for t, s in zip(flat_t, flat_s)
        ]
        return values[0] if len(values) == 1 else sum(values)

    def get_config(self):
        def layer_name(layer):
            return layer if layer is None or isinstance(layer, str) else layer.name

        return {
            "loss": keras.losses.serialize(self.loss)
            if isinstance(self.loss, keras.losses.Loss)
            else self.loss,
            "teacher_layer_name": layer_name(self.teacher_layer_name),
            "student_layer_name": layer_name(self.student_layer_name),
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("loss"), dict):
            config["loss"] = keras.losses.deserialize(config["loss"])
        return cls(**config)
