"""Feature (intermediate-layer) distillation terms: FitNets hints and AT.

Relational terms (RKD, PKT, SP) are in `feature_relational.py`. Every
function casts its inputs to float32 (features arrive in float16 under mixed
precision) and returns per-sample values `(batch,)`.
"""

import keras
from keras import ops

from kdkeras.losses.base import DistillationLoss

__all__ = [
    "AttentionTransfer",
    "FeatureDistillation",
    "FeatureTerm",
    "attention_map",
    "attention_transfer_loss",
    "hint_loss",
    "l2_normalize_rows",
]


def _per_sample(values):
    """Mean over every axis but the first: `(batch, ...) -> (batch,)`."""
    if len(values.shape) <= 1:
        return values
    return ops.mean(values, axis=list(range(1, len(values.shape))))


def _resolve_loss(loss):
    """A function `(teacher, student) -> unreduced values` for `loss`."""
    if loss is None:
        return None
    if isinstance(loss, keras.losses.Loss):
        return loss.call
    if isinstance(loss, str):
        try:
            fn = keras.losses.get(loss)
        except ValueError:
            fn = None
        if fn is None:
            raise ValueError(f"Unknown loss. Received: loss={loss!r}")
        return fn
    if callable(loss):
        return loss
    raise ValueError(
        "Expected `loss` to be a loss name such as 'mse', a keras.losses.Loss "
        f"instance or a callable. Received: loss={loss!r}"
    )


def _layer_name(layer):
    return layer if layer is None or isinstance(layer, str) else layer.name


def _check_adapter(adapter, allow_auto):
    if adapter is None or isinstance(adapter, keras.layers.Layer):
        return
    if allow_auto and adapter == "auto":
        return
    expected = (
        "'auto', None or a keras.layers.Layer" if allow_auto else ("None or a keras.layers.Layer")
    )
    raise ValueError(f"Expected `adapter` to be {expected}. Received: adapter={adapter!r}")


class FeatureTerm(DistillationLoss):
    """Base class of terms that compare tapped layers.

    Stores `teacher_layer_name`, `student_layer_name` and `adapter`, and
    serializes them. `adapter_matches_teacher` says whether the adapter's
    output must have the teacher's feature shape (`True` for terms that
    compare features element by element).
    """

    adapter_matches_teacher = True
    allow_auto_adapter = False

    def __init__(self, teacher_layer_name=None, student_layer_name=None, adapter=None, name=None):
        super().__init__(name=name)
        _check_adapter(adapter, self.allow_auto_adapter)
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name
        self.adapter = adapter

    def get_config(self):
        adapter = self.adapter
        if isinstance(adapter, keras.layers.Layer):
            adapter = keras.saving.serialize_keras_object(adapter)
        return {
            "teacher_layer_name": _layer_name(self.teacher_layer_name),
            "student_layer_name": _layer_name(self.student_layer_name),
            "adapter": adapter,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("adapter"), dict):
            config["adapter"] = keras.saving.deserialize_keras_object(config["adapter"])
        return cls(**config)


def hint_loss(teacher_features, student_features):
    """FitNets hint: mean squared error per sample.

    Args:
        teacher_features: `(batch, ...)` teacher features.
        student_features: `(batch, ...)` student features (after the
            adapter), same shape.

    Returns:
        Per-sample values `(batch,)`, float32: the mean over every other
        axis of the squared difference.

    Reference:
        Romero et al. FitNets: Hints for Thin Deep Nets. ICLR 2015.
        https://arxiv.org/abs/1412.6550
    """
    t = ops.cast(teacher_features, "float32")
    s = ops.cast(student_features, "float32")
    return _per_sample(ops.square(s - t))


@keras.saving.register_keras_serializable(package="kdkeras")
class FeatureDistillation(FeatureTerm):
    """Matches a student layer's output to a teacher layer's output.

    A drop-in for `keras.distillation.FeatureDistillation` (same arguments
    and values), plus adapters: when the tapped shapes differ, the
    `Distiller` learns a projection from the student's features to the
    teacher's (see `kdkeras.adapters.make_adapter`). With both layer names
    `None` it compares the final outputs; with names (or layer objects), the
    `Distiller` taps those layers during the single forward pass of each
    model, for Functional, Sequential, nested and subclassed models. With
    `loss="mse"` on intermediate layers this is the hint loss of FitNets.

    Args:
        loss: the comparison, `"mse"` by default: any Keras loss name,
            `keras.losses.Loss` instance or callable
            `(teacher_features, student_features) -> values`; values are
            averaged over every axis but the batch axis. For layers with
            several outputs, a matching structure of losses, `None` skipping
            an output.
        teacher_layer_name: name (or the layer object) of the teacher layer
            to tap. `None` taps the final output. Defaults to `None`.
        student_layer_name: name (or the layer object) of the student layer
            to tap. `None` taps the final output. Defaults to `None`.
        adapter: `"auto"` (build a learned adapter when the shapes differ,
            none when they are equal), `None` (never: shapes must match) or
            a Keras layer applied to the student's features. Defaults to
            `"auto"`.
        name: logged name. Defaults to `"feature_distillation_loss"`.

    Example:

    ```python
    term = kdkeras.FeatureDistillation(
        teacher_layer_name="block2_conv", student_layer_name="conv2"
    )
    distiller = kdkeras.Distiller(
        teacher, student, [kdkeras.LogitsDistillation(4.0), term],
        distillation_loss_weights=[1.0, 10.0],
    )
    ```

    Reference:
        Romero et al. FitNets: Hints for Thin Deep Nets. ICLR 2015.
        https://arxiv.org/abs/1412.6550
    """

    allow_auto_adapter = True

    def __init__(
        self,
        loss="mse",
        teacher_layer_name=None,
        student_layer_name=None,
        adapter="auto",
        name=None,
    ):
        super().__init__(teacher_layer_name, student_layer_name, adapter, name)
        self.loss = loss
        self._loss_fn = keras.tree.map_structure(_resolve_loss, loss)
        if all(fn is None for fn in keras.tree.flatten(self._loss_fn)):
            raise ValueError(
                f"Expected at least one loss that is not None. Received: loss={loss!r}"
            )

    def call(self, teacher_outputs, student_outputs, y=None):
        if keras.tree.is_nested(self._loss_fn):
            fns = keras.tree.flatten(self._loss_fn)
        else:
            fns = [self._loss_fn] * len(keras.tree.flatten(teacher_outputs))
        flat_t = keras.tree.flatten(teacher_outputs)
        flat_s = keras.tree.flatten(student_outputs)
        if not len(fns) == len(flat_t) == len(flat_s):
            raise ValueError(
                "Expected one loss per tapped output and the same number of "
                f"teacher and student outputs. Received: {len(fns)} losses, "
                f"{len(flat_t)} teacher outputs, {len(flat_s)} student outputs"
            )
        values = [
            _per_sample(fn(ops.cast(t, "float32"), ops.cast(s, "float32")))
            for fn, t, s in zip(fns, flat_t, flat_s)
            if fn is not None
        ]
        return values[0] if len(values) == 1 else sum(values)

    def get_config(self):
        config = super().get_config()

        def serialize(loss):
            if isinstance(loss, keras.losses.Loss):
                return keras.losses.serialize(loss)
            return loss

        config["loss"] = keras.tree.map_structure(serialize, self.loss)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        loss = config.get("loss")
        if isinstance(loss, dict) and "class_name" in loss:
            config["loss"] = keras.losses.deserialize(loss)
        elif isinstance(loss, (list, tuple)):
            config["loss"] = [
                keras.losses.deserialize(l) if isinstance(l, dict) else l for l in loss
            ]
        return super().from_config(config)


def l2_normalize_rows(x, eps=1e-12, offset=0.0):
    """`x / max(||x||, eps)` (or `x / (||x|| + offset)`) along the last axis.

    All-zero rows (a dead ReLU, an all-black input) map to zero with a zero
    gradient; the plain formula gives a NaN gradient there (the square
    root's derivative at 0).
    """
    sq = ops.sum(ops.square(x), axis=-1, keepdims=True)
    nonzero = sq > 0
    norm = ops.sqrt(ops.where(nonzero, sq, 1.0))
    return ops.where(nonzero, x / ops.maximum(norm + offset, eps), 0.0)


def attention_map(features, p=2.0):
    """Spatial attention map of AT: `normalize(mean_c |F|^p)` per sample.

    Args:
        features: `(batch, height, width, channels)` (or `(batch, steps,
            channels)`), channels last.
        p: the power. Defaults to 2.0.

    Returns:
        `(batch, height * width)` float32, each row of unit L2 norm.
    """
    f = ops.cast(features, "float32")
    a = ops.mean(ops.power(ops.abs(f), p), axis=-1)
    return l2_normalize_rows(ops.reshape(a, (ops.shape(a)[0], -1)))


def _match_spatial(a_t, a_s):
    """Average-pools the larger of two `(batch, h, w)` maps to the smaller."""

    def shrink(a, size):
        h, w = a.shape[1], a.shape[2]
        x = ops.expand_dims(a, -1)
        if h % size[0] == 0 and w % size[1] == 0:
            pool = (h // size[0], w // size[1])
            x = ops.average_pool(x, pool, strides=pool, padding="valid")
        else:
            x = ops.image.resize(x, size, interpolation="bilinear")
        return ops.squeeze(x, -1)

    (ht, wt), (hs, ws) = a_t.shape[1:3], a_s.shape[1:3]
    if (ht, wt) == (hs, ws):
        return a_t, a_s
    if None in (ht, wt, hs, ws):
        raise ValueError(
            "Expected static spatial sizes to match attention maps of "
            f"different sizes. Received: {a_t.shape} and {a_s.shape}"
        )
    if ht * wt > hs * ws:
        return shrink(a_t, (hs, ws)), a_s
    return a_t, shrink(a_s, (ht, wt))


def attention_transfer_loss(teacher_features, student_features, p=2.0):
    """Attention transfer: squared distance between normalized attention maps.

    The map of each model is `mean over channels of |F|^p`, flattened and
    L2-normalized per sample (`attention_map`). Channel counts may differ.
    When the spatial sizes of image features differ, the larger map
    (`mean_c |F|^p` before normalization) is average-pooled to the smaller
    size (bilinear resizing if the sizes are not multiples). The value is
    the mean over positions of the squared difference, so the batch mean
    equals `(at(s) - at(t)).pow(2).mean()` of the authors' code; the paper
    weights it by beta / 2 with beta = 1000.

    Args:
        teacher_features: `(batch, h, w, c_t)` (or `(batch, steps, c_t)`).
        student_features: `(batch, h', w', c_s)` (or `(batch, steps, c_s)`).
        p: the power. Defaults to 2.0.

    Returns:
        Per-sample values `(batch,)`, float32.

    Reference:
        Zagoruyko, Komodakis. Paying More Attention to Attention: Improving
        the Performance of Convolutional Neural Networks via Attention
        Transfer. ICLR 2017. https://arxiv.org/abs/1612.03928
    """
    t = ops.cast(teacher_features, "float32")
    s = ops.cast(student_features, "float32")
    if len(t.shape) == 4 and len(s.shape) == 4:
        m_t = ops.mean(ops.power(ops.abs(t), p), axis=-1)
        m_s = ops.mean(ops.power(ops.abs(s), p), axis=-1)
        m_t, m_s = _match_spatial(m_t, m_s)
        t = ops.expand_dims(m_t, -1)
        s = ops.expand_dims(m_s, -1)
        p = 1.0
    a_t = attention_map(t, p)
    a_s = attention_map(s, p)
    return ops.mean(ops.square(a_s - a_t), axis=-1)


@keras.saving.register_keras_serializable(package="kdkeras")
class AttentionTransfer(FeatureTerm):
    """Attention transfer between a teacher and a student feature map.

    See `attention_transfer_loss`: channel counts may differ and different
    spatial sizes are pooled, so no adapter is needed. Add one term per pair
    of layers (the paper taps the end of each residual group). The paper's
    weight is beta / 2 = 500 relative to the cross-entropy (set it with
    `distillation_loss_weights`).

    Args:
        teacher_layer_name: name (or layer object) of the teacher layer.
        student_layer_name: name (or layer object) of the student layer.
        p: the power of the attention map. Defaults to 2.0.
        adapter: `None`, or a Keras layer applied to the student's features
            first. Defaults to `None`.
        name: logged name. Defaults to `"attention_transfer_loss"`.

    Reference:
        Zagoruyko, Komodakis. Paying More Attention to Attention: Improving
        the Performance of Convolutional Neural Networks via Attention
        Transfer. ICLR 2017. https://arxiv.org/abs/1612.03928
    """

    adapter_matches_teacher = False

    def __init__(
        self,
        teacher_layer_name=None,
        student_layer_name=None,
        p=2.0,
        adapter=None,
        name=None,
    ):
        super().__init__(teacher_layer_name, student_layer_name, adapter, name)
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not p > 0:
            raise ValueError(f"Expected `p` to be a number > 0. Received: p={p!r}")
        self.p = p

    def call(self, teacher_outputs, student_outputs, y=None):
        return attention_transfer_loss(teacher_outputs, student_outputs, p=self.p)

    def get_config(self):
        return {**super().get_config(), "p": self.p}
