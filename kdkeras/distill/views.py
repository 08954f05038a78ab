"""Consistent views: one augmented (and mixed) batch for teacher and student.

Beyer et al. (2022) found that distillation pays when teacher and student
see the *same* view of every image: the same crop and flip, then mixup, drawn
fresh every step (teacher outputs computed once on fixed images overfit).
`Views` applies an augmentation and mixup to a batch once, inside the
training step, before both models run.

Mixup draws one weight `lam ~ Beta(alpha, alpha)` per batch and one
permutation of the batch: `x = lam * x + (1 - lam) * x[perm]`. The teacher
scores the mixed inputs; the ground-truth loss becomes `lam * loss(y) +
(1 - lam) * loss(y[perm])` (for cross-entropy, exactly the loss of the mixed
one-hot labels); sample weights mix like the inputs.

Reference:
    Beyer et al. Knowledge distillation: A good teacher is patient and
    consistent. CVPR 2022. https://arxiv.org/abs/2106.05237
    Zhang et al. mixup: Beyond Empirical Risk Minimization. ICLR 2018.
    https://arxiv.org/abs/1710.09412
"""

import keras
from keras import ops

from kdkeras.losses import is_finite_number

__all__ = ["CACHE_MESSAGE", "Views", "check_augment", "check_mixup", "mix"]

CACHE_MESSAGE = (
    "Cached teacher outputs cannot be used with `augment` or `mixup`: the "
    "cache holds the teacher's outputs on the original inputs, while every "
    "training step now shows both models a fresh view, so the targets would "
    "be stale (and the student would learn the wrong images' labels). Pass "
    "the plain inputs to `fit` and let the teacher run online, or build the "
    "Distiller without `augment`/`mixup` to keep the cache."
)


def check_augment(augment):
    """Validates `augment=`: `None`, a Keras layer (or model), or a callable."""
    if augment is None or isinstance(augment, keras.layers.Layer) or callable(augment):
        return augment
    raise TypeError(
        "Expected `augment` to be a Keras layer or model (for example a "
        "keras.Sequential of RandomTranslation, RandomRotation, RandomZoom), "
        f"a callable `x -> x`, or None. Received: augment={augment!r}"
    )


def check_mixup(mixup):
    """Validates `mixup=`: `None` or a Beta concentration `alpha > 0`."""
    if mixup is None:
        return None
    if isinstance(mixup, bool) or not is_finite_number(mixup) or mixup <= 0:
        raise ValueError(
            "Expected `mixup` to be None or a number alpha > 0 (the weight of "
            "each mixed pair is drawn from Beta(alpha, alpha); 1.0 draws it "
            f"uniformly). Received: mixup={mixup!r}"
        )
    return float(mixup)


def mix(x, lam, perm):
    """`lam * x + (1 - lam) * x[perm]` for every array of a structure, in its dtype."""

    def one(v):
        if not ops.is_tensor(v) and not hasattr(v, "dtype"):
            return v
        if "int" in str(v.dtype) or "bool" in str(v.dtype):
            raise TypeError(
                "Expected floating-point inputs for mixup (images, features); "
                f"integer inputs such as token ids cannot be mixed. Received: dtype={v.dtype}"
            )
        lam_v = ops.cast(lam, v.dtype)
        return lam_v * v + (1 - lam_v) * ops.take(v, perm, axis=0)

    return keras.tree.map_structure(one, x)


class Views:
    """Augmentation, then mixup, applied once per training step.

    Args:
        augment: a Keras layer or model called with `training=True`, or a
            callable `x -> x`; `None` for no augmentation.
        mixup: the Beta concentration `alpha` of mixup, or `None`.
        seed: seed of the mixup draws. Defaults to `None` (drawn from
            Keras's global seed, so `keras.utils.set_random_seed` makes runs
            repeatable).
    """

    def __init__(self, augment=None, mixup=None, seed=None):
        self.augment = check_augment(augment)
        self.mixup = check_mixup(mixup)
        self.seed_generator = (
            keras.random.SeedGenerator(seed, name="views_seed") if self.mixup else None
        )

    @property
    def active(self):
        return self.augment is not None or self.mixup is not None

    def apply_augment(self, x):
        if self.augment is None:
            return x
        if isinstance(self.augment, keras.layers.Layer):
            return self.augment(x, training=True)
        return self.augment(x)

    def draw(self, batch_size):
        """One mixup weight and one permutation of `batch_size` samples."""
        lam = keras.random.beta((), self.mixup, self.mixup, seed=self.seed_generator)
        perm = keras.random.shuffle(ops.arange(batch_size), seed=self.seed_generator)
        return ops.cast(lam, "float32"), perm

    def __call__(self, x, sample_weight=None):
        """Returns `(x, mixing, sample_weight)`; `mixing` is `(lam, perm)` or `None`."""
        x = self.apply_augment(x)
        if self.mixup is None:
            return x, None, sample_weight
        batch = ops.shape(keras.tree.flatten(x)[0])[0]
        lam, perm = self.draw(batch)
        x = mix(x, lam, perm)
        if sample_weight is not None:
            sample_weight = mix(ops.cast(sample_weight, "float32"), lam, perm)
        return x, (lam, perm), sample_weight
