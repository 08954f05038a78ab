"""Contrastive representation distillation (CRD) with its memory bank.

CRD (Tian et al. 2020) maps the teacher's and the student's features to a
shared embedding space with two trainable heads (a linear layer and L2
normalization each) and asks each model's embedding of a sample to pick out
the other model's embedding of the same sample among `nce_k` negatives. The
negatives come from two memory banks with one row per training sample (the
teacher's and the student's embeddings, updated with momentum at the
batch's dataset indices), scored by noise-contrastive estimation (NCE).

The functions are pure `keras.ops`; `ContrastMemory` holds the state (the
two banks, their normalizing constants, the negative sampler) and `CRD` is
the distillation term, using the term protocol of `DistillationLoss`
(`build`, `layers`, `needs_indices`, `call(..., training=)`). It follows
the authors' RepDistiller code (`crd/criterion.py`, `crd/memory.py`):
https://github.com/HobbitLong/RepDistiller

Reference:
    Tian, Krishnan, Isola. Contrastive Representation Distillation.
    ICLR 2020. https://arxiv.org/abs/1910.10699
"""

import math

import keras
from keras import ops

from kdkeras.losses.base import is_finite_number
from kdkeras.losses.feature import FeatureTerm
from kdkeras.losses.feature import l2_normalize_rows

__all__ = [
    "CRD",
    "ContrastMemory",
    "contrast_scores",
    "crd_loss",
    "crd_normalizer",
    "momentum_update",
    "nce_loss",
    "projection_head",
]


def contrast_scores(anchors, bank, contrast_indices, temperature=0.07):
    """Unnormalized NCE scores of anchors against rows of a memory bank.

    `exp(<bank[contrast_indices[i, k]], anchors[i]> / temperature)`, the
    `out_v1` / `out_v2` of RepDistiller's `ContrastMemory` before the
    division by `Z`. The bank rows carry no gradient (`.detach()` there).

    Args:
        anchors: `(batch, dim)` embeddings of one model.
        bank: `(num_samples, dim)` memory bank of the other model.
        contrast_indices: `(batch, 1 + nce_k)` integer rows of `bank`, the
            positive (the sample's own index) first.
        temperature: NCE temperature. Defaults to 0.07.

    Returns:
        `(batch, 1 + nce_k)` float32 scores.
    """
    rows = ops.stop_gradient(ops.take(ops.cast(bank, "float32"), contrast_indices, axis=0))
    dots = ops.einsum("bkd,bd->bk", rows, ops.cast(anchors, "float32"))
    return ops.exp(dots / temperature)


def crd_normalizer(scores, num_samples):
    """The constant `Z` of RepDistiller: `mean(scores) * num_samples`.

    Estimated once, on the first training batch, and kept (no gradient).
    """
    return ops.stop_gradient(ops.mean(ops.cast(scores, "float32")) * num_samples)


def nce_loss(probabilities, num_samples, epsilon=1e-7):
    """NCE loss of CRD (Eq. 18 of the paper) per sample.

    With `m` negatives drawn uniformly (noise probability `1 /
    num_samples`), the positive's `log(P / (P + m / N))` plus every
    negative's `log((m / N) / (P + m / N))`, negated; RepDistiller's
    `ContrastLoss` is the batch mean of these values.

    Args:
        probabilities: `(batch, 1 + m)` normalized scores, the positive
            first.
        num_samples: `N`, the number of rows of the memory bank.
        epsilon: the stabilizer of the authors' code. Defaults to 1e-7.

    Returns:
        `(batch,)` float32.
    """
    p = ops.cast(probabilities, "float32")
    m = ops.cast(ops.shape(p)[-1] - 1, "float32")
    noise = m / float(num_samples)
    positive, negatives = p[:, 0], p[:, 1:]
    log_d1 = ops.log(positive / (positive + noise + epsilon))
    log_d0 = ops.log(noise / (negatives + noise + epsilon))
    return -(log_d1 + ops.sum(log_d0, axis=-1))


def crd_loss(
    teacher_embeddings,
    student_embeddings,
    teacher_bank,
    student_bank,
    contrast_indices,
    num_samples=None,
    temperature=0.07,
    normalizers=None,
):
    """CRD's loss for given embeddings, memory banks and negatives.

    The sum of two NCE losses: the student's embedding as anchor against
    the teacher's bank, and the teacher's embedding against the student's
    bank, as in RepDistiller's `CRDLoss` (`s_loss + t_loss`). Pure: it
    updates no bank (see `momentum_update` and `ContrastMemory`).

    Args:
        teacher_embeddings: `(batch, dim)` L2-normalized teacher embeddings
            (after the teacher's head).
        student_embeddings: `(batch, dim)` L2-normalized student embeddings.
        teacher_bank: `(num_samples, dim)` memory of teacher embeddings.
        student_bank: `(num_samples, dim)` memory of student embeddings.
        contrast_indices: `(batch, 1 + nce_k)` integer rows of the banks,
            each sample's own dataset index first, then its negatives.
        num_samples: rows of the banks. Defaults to `teacher_bank.shape[0]`.
        temperature: NCE temperature. Defaults to 0.07.
        normalizers: `(z_student_anchor, z_teacher_anchor)`, the constants
            `Z` dividing the scores, or `None` to estimate them on this
            batch (`crd_normalizer`), as RepDistiller does on its first
            batch. Defaults to `None`.

    Returns:
        Per-sample values `(batch,)`, float32; their mean is RepDistiller's
        loss.

    Reference:
        Tian, Krishnan, Isola. Contrastive Representation Distillation.
        ICLR 2020. https://arxiv.org/abs/1910.10699
    """
    n = int(num_samples if num_samples is not None else teacher_bank.shape[0])
    scores_s = contrast_scores(student_embeddings, teacher_bank, contrast_indices, temperature)
    scores_t = contrast_scores(teacher_embeddings, student_bank, contrast_indices, temperature)
    if normalizers is None:
        z_s, z_t = crd_normalizer(scores_s, n), crd_normalizer(scores_t, n)
    else:
        z_s, z_t = normalizers
    return nce_loss(scores_s / z_s, n) + nce_loss(scores_t / z_t, n)


def momentum_update(bank, indices, embeddings, momentum=0.5):
    """The bank after RepDistiller's momentum update at `indices`.

    Row `i` becomes `normalize(momentum * bank[i] + (1 - momentum) *
    embedding)`; other rows are unchanged. With repeated indices in one
    batch, one of their updates wins (RepDistiller's `index_copy_` has the
    same ambiguity); an epoch of shuffled indices repeats none.

    Args:
        bank: `(num_samples, dim)` memory bank.
        indices: `(batch,)` integer dataset indices.
        embeddings: `(batch, dim)` embeddings of those samples (no gradient
            flows through the update).
        momentum: weight of the old row. Defaults to 0.5.

    Returns:
        The updated `(num_samples, dim)` float32 bank.
    """
    bank = ops.cast(bank, "float32")
    indices = ops.cast(indices, "int32")
    rows = ops.take(bank, indices, axis=0)
    rows = momentum * rows + (1.0 - momentum) * ops.stop_gradient(ops.cast(embeddings, "float32"))
    return ops.scatter_update(bank, ops.expand_dims(indices, -1), l2_normalize_rows(rows))


def projection_head(feat_dim, seed=None, name=None):
    """CRD's embedding head: flatten, a linear layer to `feat_dim`, L2 norm.

    RepDistiller's `Embed` (with Keras's default initialization of the
    linear layer). Computed in float32, also under mixed precision: the
    scores exponentiate dot products divided by 0.07.
    """
    return keras.Sequential(
        [
            keras.layers.Flatten(dtype="float32"),
            keras.layers.Dense(
                feat_dim,
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
                dtype="float32",
                name=None if name is None else f"{name}_linear",
            ),
            keras.layers.UnitNormalization(dtype="float32"),
        ],
        name=name,
    )


# The settings CRD passes to its ContrastMemory; both save them in their configs.
_MEMORY_SETTINGS = ("num_samples", "feat_dim", "nce_k", "nce_t", "nce_m", "seed")


def _memory_settings(obj):
    return {k: getattr(obj, k) for k in _MEMORY_SETTINGS}


class ContrastMemory(keras.layers.Layer):
    """CRD's state: two memory banks, their constants `Z`, the negative sampler.

    RepDistiller's `ContrastMemory`. Both banks start uniform in
    `[-s, s]`, `s = 1 / sqrt(feat_dim / 3)`. Each call draws `nce_k`
    negatives per sample uniformly from `[0, num_samples)` (with
    replacement, the sample's own index not excluded, as the memory's
    default sampler does) and returns the normalized scores of the student
    and the teacher anchors. With `training=True` it also, in the same
    step: sets the constants `Z` if unset (on the first training batch),
    and moves the rows at `indices` of both banks towards the batch's
    embeddings (`momentum_update`). All state is non-trainable and saved
    with the layer.

    Args:
        num_samples: rows of each bank, the number of training samples.
        feat_dim: embedding size.
        nce_k: negatives per sample.
        nce_t: NCE temperature. Defaults to 0.07.
        nce_m: momentum of the bank update. Defaults to 0.5.
        seed: seed of the bank initialization and the negative draws.
            Defaults to `None`. The draws' state is a weight
            (`sampler_state`), saved with the banks.
        **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, num_samples, feat_dim, nce_k, nce_t=0.07, nce_m=0.5, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_samples = num_samples
        self.feat_dim = feat_dim
        self.nce_k = nce_k
        self.nce_t = nce_t
        self.nce_m = nce_m
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape=None):
        bound = 1.0 / math.sqrt(self.feat_dim / 3.0)

        def bank(name, offset):
            seed = None if self.seed is None else self.seed + 2 + offset
            return self.add_weight(
                shape=(self.num_samples, self.feat_dim),
                initializer=keras.initializers.RandomUniform(-bound, bound, seed=seed),
                trainable=False,
                name=name,
            )

        self.teacher_bank = bank("teacher_bank", 1)
        self.student_bank = bank("student_bank", 2)
        # Z of the student anchor (against the teacher bank), then of the
        # teacher anchor; negative until the first training batch sets them.
        self.normalizers = self.add_weight(
            shape=(2,),
            initializer=keras.initializers.Constant(-1.0),
            trainable=False,
            name="normalizers",
        )
        # The sampler's state as a weight of this layer, so that it is saved
        # and a resumed run draws the negatives an uninterrupted one would
        # (Keras saves no SeedGenerator state).
        self.sampler_state = self.add_weight(
            shape=(2,),
            initializer="zeros",
            dtype=self.seed_generator.state.dtype,
            trainable=False,
            name="sampler_state",
        )
        self.sampler_state.assign(self.seed_generator.state)
        self.built = True

    def sample_contrast_indices(self, indices):
        """`(batch, 1 + nce_k)`: each index, then `nce_k` uniform draws."""
        indices = ops.cast(indices, "int32")
        self.seed_generator.state.assign(self.sampler_state)
        negatives = keras.random.randint(
            (ops.shape(indices)[0], self.nce_k),
            0,
            self.num_samples,
            dtype="int32",
            seed=self.seed_generator,
        )
        self.sampler_state.assign(self.seed_generator.state)
        return ops.concatenate([ops.expand_dims(indices, -1), negatives], axis=-1)

    def call(self, teacher_embeddings, student_embeddings, indices, training=False):
        contrast = self.sample_contrast_indices(indices)
        scores_s = contrast_scores(student_embeddings, self.teacher_bank, contrast, self.nce_t)
        scores_t = contrast_scores(teacher_embeddings, self.student_bank, contrast, self.nce_t)
        estimate = ops.stack(
            [
                crd_normalizer(scores_s, self.num_samples),
                crd_normalizer(scores_t, self.num_samples),
            ]
        )
        stored = ops.convert_to_tensor(self.normalizers)
        normalizers = ops.where(stored > 0, stored, estimate)
        if training:
            self.normalizers.assign(normalizers)
            self.teacher_bank.assign(
                momentum_update(self.teacher_bank, indices, teacher_embeddings, self.nce_m)
            )
            self.student_bank.assign(
                momentum_update(self.student_bank, indices, student_embeddings, self.nce_m)
            )
        return scores_s / normalizers[0], scores_t / normalizers[1]

    def get_config(self):
        return {**super().get_config(), **_memory_settings(self)}


def _check_int(arg, value, minimum=1):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(
            f"Expected `{arg}` to be an integer >= {minimum}. Received: {arg}={value!r}"
        )


@keras.saving.register_keras_serializable(package="kdkeras")
class CRD(FeatureTerm):
    """Contrastive representation distillation with a memory bank.

    Two trainable heads (`projection_head`: linear layer to `feat_dim`, L2
    normalization), one on the tapped teacher features and one on the
    student's, trained with the student and never part of it (a saved or
    exported student contains neither). The loss is `crd_loss` on the
    batch's embeddings with `nce_k` negatives per sample drawn from the
    memory banks of `ContrastMemory`, which every training step updates at
    the batch's dataset indices. The term therefore needs the dataset index
    of every training sample: `Distiller.fit` adds them to array inputs
    (they follow the samples when `fit` shuffles); a `tf.data` pipeline
    carries them itself (`kdkeras.distill.with_indices`), and a batch
    without them fails with an error that says so.

    CRD is a training-only term: its positives are the training samples'
    rows of the banks, so `evaluate()` and validation log 0 for it (and
    update nothing). Under a `tf.distribute` strategy the `Distiller`
    gathers the batch from every replica (`needs_global_batch`), so every
    replica draws the same negatives and makes the same bank update, equal
    to one device's (tested with `MirroredStrategy`).

    Differences from RepDistiller: negatives are drawn uniformly from the
    whole bank (its `ContrastMemory` default; its CIFAR-100 loader instead
    draws them from other classes, `mode="exact"`); the cost per step grows
    with `batch * nce_k * feat_dim` (the paper's 16384 negatives are sized
    for a GPU, a few thousand suit a CPU); each bank update rewrites the
    whole bank variable (`num_samples * feat_dim` floats), fine for
    datasets of tens of thousands of samples.

    Args:
        teacher_layer_name: name (or layer object) of the teacher layer;
            `None` for the final output. The paper taps the penultimate
            layer (the embedding before the logits).
        student_layer_name: the same for the student.
        num_samples: the number of training samples: the banks have one row
            per dataset index `0 .. num_samples - 1`. Required.
        feat_dim: embedding size of the heads. Defaults to 128.
        nce_k: negatives per sample. Defaults to 16384 (the paper's).
        nce_t: NCE temperature. Defaults to 0.07.
        nce_m: momentum of the bank update. Defaults to 0.5.
        seed: seed of the heads' and banks' initialization and of the
            negative draws. Defaults to `None`.
        adapter: `None`, or a Keras layer applied to the student's features
            before its head. Defaults to `None`.
        name: logged name. Defaults to `"crd_loss"`.

    Example:

    ```python
    term = kdkeras.CRD("t_emb", "s_emb", num_samples=len(x_train), nce_k=4096)
    distiller = kdkeras.Distiller(
        teacher, student, [kdkeras.LogitsDistillation(4.0), term],
        distillation_loss_weights=[1.0, 0.8],
    )
    distiller.fit(x_train, y_train)  # indices added and shuffled with the samples
    ```

    Reference:
        Tian, Krishnan, Isola. Contrastive Representation Distillation.
        ICLR 2020. https://arxiv.org/abs/1910.10699
    """

    adapter_matches_teacher = False
    needs_indices = True
    needs_global_batch = True

    def __init__(
        self,
        teacher_layer_name=None,
        student_layer_name=None,
        num_samples=None,
        feat_dim=128,
        nce_k=16384,
        nce_t=0.07,
        nce_m=0.5,
        seed=None,
        adapter=None,
        name=None,
    ):
        super().__init__(teacher_layer_name, student_layer_name, adapter, name)
        if num_samples is None:
            raise ValueError(
                "Expected `num_samples`, the number of training samples: CRD's "
                "memory banks have one row per sample. Received: num_samples=None"
            )
        _check_int("num_samples", num_samples)
        _check_int("feat_dim", feat_dim)
        _check_int("nce_k", nce_k)
        if not is_finite_number(nce_t) or nce_t <= 0:
            raise ValueError(
                f"Expected `nce_t` to be a finite number > 0. Received: nce_t={nce_t!r}"
            )
        if not is_finite_number(nce_m) or not 0 <= nce_m < 1:
            raise ValueError(
                f"Expected `nce_m` to be a number in [0, 1). Received: nce_m={nce_m!r}"
            )
        if seed is not None:
            _check_int("seed", seed, minimum=0)
        self.num_samples = num_samples
        self.feat_dim = feat_dim
        self.nce_k = nce_k
        self.nce_t = nce_t
        self.nce_m = nce_m
        self.seed = seed
        self.teacher_head = None
        self.student_head = None
        self.memory = None

    def build(self, teacher_shape, student_shape):
        for role, shape in (("teacher", teacher_shape), ("student", student_shape)):
            if not isinstance(shape, tuple) or len(shape) < 2 or None in shape[1:]:
                raise ValueError(
                    f"Expected one {role} feature tensor of known shape (besides the "
                    f"batch axis) for CRD's {role} head. Received: {role} features "
                    f"of shape {shape}"
                )
        seed = self.seed
        self.teacher_head = projection_head(self.feat_dim, seed, name="crd_teacher_head")
        self.student_head = projection_head(
            self.feat_dim, None if seed is None else seed + 1, name="crd_student_head"
        )
        self.teacher_head.build(teacher_shape)
        self.student_head.build(student_shape)
        self.memory = ContrastMemory(**_memory_settings(self), name="crd_memory")
        self.memory.build()
        self.built = True

    @property
    def layers(self):
        if not self.built:
            return []
        return [self.teacher_head, self.student_head, self.memory]

    def call(self, teacher_outputs, student_outputs, y=None, indices=None, training=False):
        if not self.built:
            raise ValueError(
                "Expected a built CRD term: its heads and memory banks are created by "
                "the kdkeras.Distiller that holds it (or by `build(teacher_shape, "
                "student_shape)`). Received: an unbuilt term"
            )
        if not training:
            # Positives are rows of the training set's banks: no value on
            # other data, and nothing to update.
            return ops.zeros((ops.shape(student_outputs)[0],), "float32")
        if indices is None:
            raise ValueError(
                "Expected the dataset index of every training sample: CRD updates "
                "its memory banks at those rows. Pass arrays to Distiller.fit (it "
                "adds the indices), or a dataset built with "
                "kdkeras.distill.with_indices. Received: indices=None"
            )
        e_t = self.teacher_head(teacher_outputs)
        e_s = self.student_head(student_outputs)
        p_s, p_t = self.memory(e_t, e_s, indices, training=True)
        return nce_loss(p_s, self.num_samples) + nce_loss(p_t, self.num_samples)

    def compute_loss(self, teacher_outputs, student_outputs, sample_weight=None, y=None, **kwargs):
        raise ValueError(
            "Expected CRD inside a kdkeras.Distiller: it needs dataset indices, "
            "owned heads and a memory bank, which keras.distillation.Distiller "
            "does not provide. Received: a call to CRD.compute_loss"
        )

    def get_config(self):
        return {**super().get_config(), **_memory_settings(self)}
