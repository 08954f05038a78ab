"""Relational feature terms: RKD, PKT and similarity-preserving KD.

These compare how samples of a batch relate to each other (distances,
angles, similarities), not the features themselves, so teacher and student
features may have any sizes and need no adapter; features are flattened to
`(batch, -1)` and cast to float32.

The losses are batch quantities. Each function returns one value per
sample: that sample's row of the batch relation matrix, averaged so that
the batch mean equals the paper's loss. Sample weights (applied by the
`Distiller`) therefore weight rows: a zero-weight sample still appears in
the other samples' rows.

The relations span the batch the function receives. The classes set
`needs_global_batch`: under a `tf.distribute` strategy the `Distiller`
gathers the features of every replica first, so each replica relates all
samples of the global batch, as one device does (tested). Called directly
inside a replica, the functions see that replica's samples only.
"""

import keras
from keras import ops

from kdkeras.losses.feature import FeatureTerm
from kdkeras.losses.feature import l2_normalize_rows

__all__ = [
    "PKT",
    "RKD",
    "SimilarityPreserving",
    "pkt_loss",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "similarity_preserving_loss",
]


def _flatten(features):
    x = ops.cast(features, "float32")
    return ops.reshape(x, (ops.shape(x)[0], -1))


def _off_diagonal(n):
    idx = ops.arange(n)
    return ops.not_equal(ops.expand_dims(idx, 1), ops.expand_dims(idx, 0))


def _huber(x):
    """Smooth L1 with threshold 1 (PyTorch's `smooth_l1_loss`)."""
    a = ops.abs(x)
    return ops.where(a < 1.0, 0.5 * ops.square(x), a - 0.5)


def _pairwise_distances(e, eps=1e-12):
    """Euclidean distances `(n, n)`, zero diagonal, clamped like the RKD code."""
    sq = ops.sum(ops.square(e), axis=-1)
    d2 = ops.expand_dims(sq, 1) + ops.expand_dims(sq, 0) - 2.0 * ops.matmul(e, ops.transpose(e))
    d = ops.sqrt(ops.maximum(d2, eps))
    return ops.where(_off_diagonal(ops.shape(e)[0]), d, 0.0)


def _normalized_distances(e):
    d = _pairwise_distances(e)
    positive = ops.cast(d > 0, "float32")
    mean = ops.divide_no_nan(ops.sum(d), ops.sum(positive))
    return ops.divide_no_nan(d, mean)


def rkd_distance_loss(teacher_features, student_features):
    """RKD distance term: Huber loss between normalized distance matrices.

    Pairwise Euclidean distances of each model's features are divided by
    their mean over distinct pairs, then compared with the smooth L1 loss.

    Args:
        teacher_features: `(batch, ...)` teacher features.
        student_features: `(batch, ...)` student features; any size.

    Returns:
        Per-sample values `(batch,)`, float32: row `i` is the mean over `j`
        of `huber(d_s[i, j] - d_t[i, j])`; their mean is the paper's loss.

    Reference:
        Park et al. Relational Knowledge Distillation. CVPR 2019.
        https://arxiv.org/abs/1904.05068
    """
    d_t = _normalized_distances(_flatten(teacher_features))
    d_s = _normalized_distances(_flatten(student_features))
    return ops.mean(_huber(d_s - d_t), axis=-1)


def _angles(e):
    """`angle[a, b, c] = <unit(e_b - e_a), unit(e_c - e_a)>`, shape `(n, n, n)`.

    The authors' formulation, from the `(n, n, dim)` difference vectors.
    Differences that are exactly zero (the diagonal, and duplicated samples,
    common after a ReLU) get a zero unit vector, as in the authors' code,
    and a zero gradient, where dividing by a floored norm would multiply
    the gradient by 1e12.
    """
    diff = ops.expand_dims(e, 0) - ops.expand_dims(e, 1)  # diff[a, b] = e_b - e_a
    sq = ops.sum(ops.square(diff), axis=-1, keepdims=True)
    nonzero = sq > 1e-30
    unit = ops.where(nonzero, diff / ops.sqrt(ops.where(nonzero, sq, 1.0)), 0.0)
    return ops.matmul(unit, ops.transpose(unit, (0, 2, 1)))


def rkd_angle_loss(teacher_features, student_features):
    """RKD angle term: Huber loss between the angles of all sample triplets.

    Args:
        teacher_features: `(batch, ...)` teacher features.
        student_features: `(batch, ...)` student features; any size.

    Returns:
        Per-sample values `(batch,)`, float32: row `a` is the mean over
        `(b, c)` of `huber(cos_s[a, b, c] - cos_t[a, b, c])`, the angle at
        vertex `a`; their mean is the paper's loss. Memory grows as
        `batch^2 * dim` (the paper taps the final embedding).

    Reference:
        Park et al. Relational Knowledge Distillation. CVPR 2019.
        https://arxiv.org/abs/1904.05068
    """
    a_t = _angles(_flatten(teacher_features))
    a_s = _angles(_flatten(student_features))
    return ops.mean(_huber(a_s - a_t), axis=(1, 2))


def pkt_loss(teacher_features, student_features, eps=1e-7):
    """Probabilistic knowledge transfer: KL between cosine-kernel densities.

    Each model's features are L2-normalized; the cosine similarities, mapped
    to `(cos + 1) / 2` and normalized per row, form conditional
    distributions `p(j | i)`; the loss is the KL divergence of the
    student's from the teacher's, as in the authors' code.

    Args:
        teacher_features: `(batch, ...)` teacher features.
        student_features: `(batch, ...)` student features; any size.
        eps: the stabilizer of the authors' code. Defaults to 1e-7.

    Returns:
        Per-sample values `(batch,)`, float32: row `i` is the mean over `j`
        of `p_t(j|i) * log((p_t(j|i) + eps) / (p_s(j|i) + eps))`; their mean
        is the paper's loss.

    Reference:
        Passalis, Tefas. Learning Deep Representations with Probabilistic
        Knowledge Transfer. ECCV 2018. https://arxiv.org/abs/1803.10837
    """

    def conditional(x):
        x = _flatten(x)
        x = l2_normalize_rows(x, eps=0.0, offset=eps)
        sim = (ops.matmul(x, ops.transpose(x)) + 1.0) / 2.0
        return sim / ops.sum(sim, axis=-1, keepdims=True)

    p_t = conditional(teacher_features)
    p_s = conditional(student_features)
    return ops.mean(p_t * ops.log((p_t + eps) / (p_s + eps)), axis=-1)


def similarity_preserving_loss(teacher_features, student_features):
    """Similarity-preserving KD: match row-normalized batch Gram matrices.

    Args:
        teacher_features: `(batch, ...)` teacher features.
        student_features: `(batch, ...)` student features; any size.

    Returns:
        Per-sample values `(batch,)`, float32: row `i` is
        `sum_j (G_t[i, j] - G_s[i, j])^2 / batch`, so their mean is the
        paper's `||G_t - G_s||_F^2 / batch^2`.

    Reference:
        Tung, Mori. Similarity-Preserving Knowledge Distillation. ICCV 2019.
        https://arxiv.org/abs/1907.09682
    """

    def gram(x):
        x = _flatten(x)
        return l2_normalize_rows(ops.matmul(x, ops.transpose(x)))

    diff = gram(teacher_features) - gram(student_features)
    n = ops.cast(ops.shape(diff)[0], "float32")
    return ops.sum(ops.square(diff), axis=-1) / n


class _RelationalTerm(FeatureTerm):
    adapter_matches_teacher = False
    needs_global_batch = True


@keras.saving.register_keras_serializable(package="kdkeras")
class RKD(_RelationalTerm):
    """Relational knowledge distillation: distance and angle terms.

    `distance_weight * rkd_distance_loss + angle_weight * rkd_angle_loss`
    on the tapped features (the paper taps the final embedding, the
    penultimate layer of a classifier). Sizes may differ: no adapter.

    Args:
        teacher_layer_name: name (or layer object) of the teacher layer;
            `None` for the final output.
        student_layer_name: name (or layer object) of the student layer;
            `None` for the final output.
        distance_weight: weight of the distance term. Defaults to 25.0
            (the paper's).
        angle_weight: weight of the angle term. Defaults to 50.0 (the
            paper's).
        adapter: `None`, or a Keras layer applied to the student's features
            first (an embedding head). Defaults to `None`.
        name: logged name. Defaults to `"rkd_loss"`.

    Reference:
        Park et al. Relational Knowledge Distillation. CVPR 2019.
        https://arxiv.org/abs/1904.05068
    """

    def __init__(
        self,
        teacher_layer_name=None,
        student_layer_name=None,
        distance_weight=25.0,
        angle_weight=50.0,
        adapter=None,
        name=None,
    ):
        super().__init__(teacher_layer_name, student_layer_name, adapter, name)
        for arg, value in (("distance_weight", distance_weight), ("angle_weight", angle_weight)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"Expected `{arg}` to be a number >= 0. Received: {arg}={value!r}")
        self.distance_weight = distance_weight
        self.angle_weight = angle_weight

    def call(self, teacher_outputs, student_outputs, y=None):
        value = 0.0
        if self.distance_weight:
            value = value + self.distance_weight * rkd_distance_loss(
                teacher_outputs, student_outputs
            )
        if self.angle_weight:
            value = value + self.angle_weight * rkd_angle_loss(teacher_outputs, student_outputs)
        if isinstance(value, float):
            return ops.zeros((ops.shape(student_outputs)[0],), "float32")
        return value

    def get_config(self):
        return {
            **super().get_config(),
            "distance_weight": self.distance_weight,
            "angle_weight": self.angle_weight,
        }


@keras.saving.register_keras_serializable(package="kdkeras")
class PKT(_RelationalTerm):
    """Probabilistic knowledge transfer on tapped features (see `pkt_loss`).

    Sizes may differ: no adapter. The paper taps the penultimate layer;
    RepDistiller weights the term 30000 relative to the cross-entropy.

    Args:
        teacher_layer_name: name (or layer object) of the teacher layer;
            `None` for the final output.
        student_layer_name: name (or layer object) of the student layer;
            `None` for the final output.
        adapter: `None`, or a Keras layer applied to the student's features
            first. Defaults to `None`.
        name: logged name. Defaults to `"pkt_loss"`.

    Reference:
        Passalis, Tefas. Learning Deep Representations with Probabilistic
        Knowledge Transfer. ECCV 2018. https://arxiv.org/abs/1803.10837
    """

    def call(self, teacher_outputs, student_outputs, y=None):
        return pkt_loss(teacher_outputs, student_outputs)


@keras.saving.register_keras_serializable(package="kdkeras")
class SimilarityPreserving(_RelationalTerm):
    """Similarity-preserving KD on tapped features.

    See `similarity_preserving_loss`. Sizes may differ: no adapter. The
    paper taps the last feature map and weights the term by gamma = 3000
    relative to the cross-entropy (set it with `distillation_loss_weights`).

    Args:
        teacher_layer_name: name (or layer object) of the teacher layer;
            `None` for the final output.
        student_layer_name: name (or layer object) of the student layer;
            `None` for the final output.
        adapter: `None`, or a Keras layer applied to the student's features
            first. Defaults to `None`.
        name: logged name. Defaults to `"similarity_preserving_loss"`.

    Reference:
        Tung, Mori. Similarity-Preserving Knowledge Distillation. ICCV 2019.
        https://arxiv.org/abs/1907.09682
    """

    def call(self, teacher_outputs, student_outputs, y=None):
        return similarity_preserving_loss(teacher_outputs, student_outputs)
