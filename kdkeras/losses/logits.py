"""Output (logit) distillation terms: Hinton KD, DKD, DIST, logit standardization.

Each term is a pure `keras.ops` function on logits shaped
`(..., num_classes)` returning per-sample values shaped `(...)`, plus a thin
class. Inputs are cast to float32 first, so the terms are exact under mixed
precision. The T^2 factor of Hinton et al. is applied inside the functions
(and only there), so the gradient scale does not change with the temperature.

With `standardize=True` each function first z-scores the teacher's and the
student's logits per sample (`standardize_logits`, Sun et al. 2024); the
temperature then acts as the paper's base temperature and T^2 stays, as in
the authors' code.
"""

import keras
from keras import ops

from kdkeras.losses.base import DistillationLoss
from kdkeras.losses.base import is_finite_number

__all__ = [
    "DIST",
    "DKD",
    "LogitsDistillation",
    "dist_loss",
    "dkd_loss",
    "ensemble_logits",
    "kd_loss",
    "soft_cross_entropy",
    "standardize_logits",
]

_KL_NAMES = ("kl_divergence", "kld", "kullback_leibler_divergence")
_REVERSE_KL_NAMES = ("reverse_kl_divergence", "reverse_kld")
_CE_NAMES = ("categorical_crossentropy",)


def _check_temperature(temperature):
    if not is_finite_number(temperature) or temperature <= 0:
        raise ValueError(
            "Expected `temperature` to be a finite number > 0. "
            f"Received: temperature={temperature!r}"
        )


def _check_weight(arg, value):
    if not is_finite_number(value) or value < 0:
        raise ValueError(f"Expected `{arg}` to be a finite number >= 0. Received: {arg}={value!r}")


def standardize_logits(logits, epsilon=1e-7):
    """Z-scores logits over the class axis: mean 0, standard deviation 1.

    `(z - mean(z)) / (std(z) + epsilon)` per sample, with the population
    standard deviation `sqrt(mean((z - mean(z))^2))` of the paper. The
    authors' code divides by the unbiased standard deviation (`torch.std`),
    which makes every standardized logit `sqrt((K - 1) / K)` times smaller
    for `K` classes: the same as a base temperature `sqrt(K / (K - 1))`
    times larger (1.054 for 10 classes).

    Args:
        logits: `(..., num_classes)` logits.
        epsilon: added to the standard deviation. Defaults to 1e-7 (the
            authors' code).

    Returns:
        `(..., num_classes)` float32 standardized logits.

    Reference:
        Sun et al. Logit Standardization in Knowledge Distillation. CVPR
        2024. https://arxiv.org/abs/2403.01427
    """
    z = ops.cast(logits, "float32")
    centered = z - ops.mean(z, axis=-1, keepdims=True)
    variance = ops.mean(ops.square(centered), axis=-1, keepdims=True)
    # sqrt'(0) is infinite: logits equal across classes would give NaN
    # gradients. The clamp (a standard deviation of 1e-12) sits far below
    # `epsilon`, so it changes no value that epsilon does not already.
    return centered / (ops.sqrt(ops.maximum(variance, 1e-24)) + epsilon)


def _prepare(logits, standardize):
    return standardize_logits(logits) if standardize else ops.cast(logits, "float32")


def _check_flag(arg, value):
    if not isinstance(value, bool):
        raise ValueError(f"Expected `{arg}` to be True or False. Received: {arg}={value!r}")


def _log_softmax_t(logits, temperature):
    return ops.log_softmax(ops.cast(logits, "float32") / temperature, axis=-1)


def kd_loss(teacher_logits, student_logits, temperature=4.0, reverse=False, standardize=False):
    """Hinton knowledge-distillation loss, KL between softened distributions.

    `T^2 * KL(softmax(t / T) || softmax(s / T))` per sample (forward KL, the
    teacher's distribution first), or `T^2 * KL(softmax(s / T) ||
    softmax(t / T))` with `reverse=True` (mode-seeking, as used for
    generative students). Computed from log-softmax, so it stays finite for
    logits of magnitude 1e3 and any temperature.

    Args:
        teacher_logits: `(..., num_classes)` logits of the teacher.
        student_logits: `(..., num_classes)` logits of the student.
        temperature: softening temperature `T > 0`. Defaults to 4.0.
        reverse: compute the reverse KL. Defaults to `False`.
        standardize: z-score both logits first (`standardize_logits`);
            `temperature` is then the base temperature. Defaults to `False`.

    Returns:
        Per-sample values shaped `(...)`, float32.

    Reference:
        Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network.
        https://arxiv.org/abs/1503.02531
    """
    log_p_t = _log_softmax_t(_prepare(teacher_logits, standardize), temperature)
    log_p_s = _log_softmax_t(_prepare(student_logits, standardize), temperature)
    if reverse:
        log_p_t, log_p_s = log_p_s, log_p_t
    kl = ops.sum(ops.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
    return kl * (temperature**2)


def soft_cross_entropy(teacher_logits, student_logits, temperature=4.0, standardize=False):
    """`T^2 * H(softmax(t / T), softmax(s / T))` per sample.

    Equals `kd_loss` plus the teacher's entropy: the same gradient for the
    student, a different value. `standardize` as in `kd_loss`.

    Reference:
        Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network.
        https://arxiv.org/abs/1503.02531
    """
    p_t = ops.exp(_log_softmax_t(_prepare(teacher_logits, standardize), temperature))
    log_p_s = _log_softmax_t(_prepare(student_logits, standardize), temperature)
    return -ops.sum(p_t * log_p_s, axis=-1) * (temperature**2)


def ensemble_logits(teacher_logits, weights=None, temperature=1.0):
    """Logits whose softened distribution is the teachers' weighted average.

    Returns `z` with `softmax(z / T) = sum_i w_i softmax(t_i / T)`, that is
    `z = T * logsumexp_i(log w_i + log_softmax(t_i / T))`, so every logit
    term can distil from an ensemble of teachers at its own temperature.

    Args:
        teacher_logits: a list of `(..., num_classes)` logits.
        weights: one non-negative weight per teacher, or `None` for equal
            weights. Normalised to sum to one.
        temperature: the temperature at which the soft targets are averaged.

    Returns:
        `(..., num_classes)` float32 logits.
    """
    n = len(teacher_logits)
    if weights is None:
        weights = [1.0] * n
    total = float(sum(weights))
    stacked = ops.stack([_log_softmax_t(t, temperature) for t in teacher_logits], axis=0)
    log_w = ops.reshape(
        ops.log(ops.convert_to_tensor([w / total for w in weights], "float32")),
        (n,) + (1,) * (len(stacked.shape) - 1),
    )
    return temperature * ops.logsumexp(stacked + log_w, axis=0)


def _one_hot_targets(y, teacher_logits, num_classes):
    """Boolean target mask from sparse or one-hot labels, else teacher argmax."""
    if y is None:
        return ops.one_hot(ops.argmax(teacher_logits, axis=-1), num_classes) > 0.5
    y = ops.convert_to_tensor(y)
    if len(y.shape) == len(teacher_logits.shape) and y.shape[-1] == num_classes:
        return ops.one_hot(ops.argmax(y, axis=-1), num_classes) > 0.5
    if len(y.shape) == len(teacher_logits.shape):  # (..., 1) sparse labels
        y = ops.squeeze(y, axis=-1)
    return ops.one_hot(ops.cast(y, "int32"), num_classes) > 0.5


def _kl_where(mask, log_p, log_q):
    """Sum of p * (log p - log q) over the last axis, skipping masked entries.

    Masked entries have p = 0 and log p = -inf; `where` keeps their 0 * inf
    out of the sum (and out of the gradient).
    """
    safe_log_p = ops.where(mask, 0.0, log_p)
    safe_log_q = ops.where(mask, 0.0, log_q)
    terms = ops.where(mask, 0.0, ops.exp(safe_log_p) * (safe_log_p - safe_log_q))
    return ops.sum(terms, axis=-1)


def dkd_loss(
    teacher_logits,
    student_logits,
    y=None,
    alpha=1.0,
    beta=8.0,
    temperature=4.0,
    standardize=False,
):
    """Decoupled knowledge distillation, `alpha * TCKD + beta * NCKD`.

    TCKD is the binary KL between the teacher's and student's probability of
    the target class versus all others; NCKD is the KL between their
    distributions over the non-target classes only. Both are computed in log
    space and scaled by T^2.

    Args:
        teacher_logits: `(..., num_classes)` logits of the teacher.
        student_logits: `(..., num_classes)` logits of the student.
        y: target classes, sparse `(...)` / `(..., 1)` or one-hot
            `(..., num_classes)`. `None` (unlabeled data) uses the teacher's
            argmax.
        alpha: weight of TCKD. Defaults to 1.0.
        beta: weight of NCKD. Defaults to 8.0.
        temperature: softening temperature. Defaults to 4.0.
        standardize: z-score both logits first (`standardize_logits`);
            `temperature` is then the base temperature. Defaults to `False`.

    Returns:
        Per-sample values shaped `(...)`, float32.

    Reference:
        Zhao et al. Decoupled Knowledge Distillation. CVPR 2022.
        https://arxiv.org/abs/2203.08679
    """
    t = _prepare(teacher_logits, standardize) / temperature
    s = _prepare(student_logits, standardize) / temperature
    num_classes = t.shape[-1]
    gt = _one_hot_targets(y, t, num_classes)

    def binary_log_probs(z):
        log_z = ops.logsumexp(z, axis=-1)
        log_target = ops.sum(ops.where(gt, z, 0.0), axis=-1) - log_z
        log_other = ops.logsumexp(ops.where(gt, -1e30, z), axis=-1) - log_z
        return ops.stack([log_target, log_other], axis=-1)

    b_t, b_s = binary_log_probs(t), binary_log_probs(s)
    tckd = ops.sum(ops.exp(b_t) * (b_t - b_s), axis=-1)

    neg_inf = ops.cast(-1e30, "float32")
    log_nt = ops.log_softmax(ops.where(gt, neg_inf, t), axis=-1)
    log_ns = ops.log_softmax(ops.where(gt, neg_inf, s), axis=-1)
    nckd = _kl_where(gt, log_nt, log_ns)
    return (alpha * tckd + beta * nckd) * (temperature**2)


def _safe_norm(a, axis):
    # sqrt'(0) is infinite: a column of a confident model's probabilities
    # whose squared deviations underflow to 0 (TensorFlow flushes denormals)
    # would give NaN gradients. Clamping the squared norm away from 0 keeps
    # the gradient finite; the clamp (1e-24, a norm of 1e-12) sits far below
    # any deviation that carries information.
    return ops.sqrt(ops.maximum(ops.sum(a * a, axis=axis), 1e-24))


def _pearson(a, b, axis, eps=1e-8):
    a = a - ops.mean(a, axis=axis, keepdims=True)
    b = b - ops.mean(b, axis=axis, keepdims=True)
    num = ops.sum(a * b, axis=axis)
    # A product of norms, not the norm of a product: sum(a^2) * sum(b^2)
    # underflows long before either factor does.
    return num / (_safe_norm(a, axis) * _safe_norm(b, axis) + eps)


def dist_loss(
    teacher_logits, student_logits, beta=1.0, gamma=1.0, temperature=1.0, standardize=False
):
    """DIST: match inter-class and intra-class Pearson correlations.

    Inter-class: `1 - pearson(p_s[i, :], p_t[i, :])` per sample. Intra-class:
    `1 - pearson(p_s[:, c], p_t[:, c])` per class across the batch, averaged
    over classes; a batch-level quantity, added to every sample's value, so
    the batch mean equals the paper's loss. Sample weights therefore weight
    the inter-class part per sample and scale the intra-class part by their
    mean; every sample of the batch, zero-weighted ones included, enters the
    intra-class correlations. Both parts are scaled by T^2. Under a
    `tf.distribute` strategy the `Distiller` gathers the batch from every
    replica first (`needs_global_batch`), so the intra-class correlations
    span the global batch, as on one device.

    Args:
        teacher_logits: `(batch, num_classes)` logits of the teacher.
        student_logits: `(batch, num_classes)` logits of the student.
        beta: weight of the inter-class term. Defaults to 1.0.
        gamma: weight of the intra-class term. Defaults to 1.0.
        temperature: softening temperature. Defaults to 1.0.
        standardize: z-score both logits first (`standardize_logits`);
            `temperature` is then the base temperature. Defaults to `False`.

    Returns:
        Per-sample values shaped `(batch,)`, float32.

    Reference:
        Huang et al. Knowledge Distillation from A Stronger Teacher.
        NeurIPS 2022. https://arxiv.org/abs/2205.10536
    """
    p_t = ops.softmax(_prepare(teacher_logits, standardize) / temperature, axis=-1)
    p_s = ops.softmax(_prepare(student_logits, standardize) / temperature, axis=-1)
    inter = 1.0 - _pearson(p_s, p_t, axis=-1)
    intra = ops.mean(1.0 - _pearson(p_s, p_t, axis=0))
    return (beta * inter + gamma * intra) * (temperature**2)


def _map_outputs(fn, teacher_outputs, student_outputs):
    """Applies a per-sample term to each output and sums over outputs."""
    flat_t = keras.tree.flatten(teacher_outputs)
    flat_s = keras.tree.flatten(student_outputs)
    if len(flat_t) != len(flat_s):
        raise ValueError(
            "Expected the teacher and the student to have the same number of "
            f"outputs. Received: {len(flat_t)} teacher outputs and "
            f"{len(flat_s)} student outputs."
        )
    values = [fn(t, s) for t, s in zip(flat_t, flat_s)]
    if len(values) == 1:
        return values[0]
    # Several outputs may differ in rank: reduce each to (batch,) first.
    return sum(
        ops.mean(v, axis=list(range(1, len(v.shape)))) if len(v.shape) > 1 else v for v in values
    )


@keras.saving.register_keras_serializable(package="kdkeras")
class LogitsDistillation(DistillationLoss):
    """Hinton knowledge distillation on the models' final outputs.

    A drop-in for `keras.distillation.LogitsDistillation` that computes the
    loss correctly: the KL divergence between the temperature-softened
    softmax distributions, from log-softmax, times T^2 (see `kd_loss`).

    Args:
        temperature: softening temperature `T > 0`. Defaults to 3.0 (as in
            Keras).
        loss: `"kl_divergence"` (forward KL, the default),
            `"reverse_kl_divergence"`, or `"categorical_crossentropy"` (same
            gradient as forward KL, value offset by the teacher's entropy). A
            `keras.losses.KLDivergence` or `keras.losses.CategoricalCrossentropy`
            instance is accepted for compatibility and mapped to the same
            computation.
        standardize: z-score the teacher's and the student's logits per
            sample before the softmax (logit standardization, Sun et al.
            2024; see `standardize_logits`); `temperature` is then the base
            temperature and T^2 still applies, as in the authors' code,
            whose CIFAR-100 runs use a base temperature of 2 and weight the
            term 9 against 0.1 for the cross-entropy. Needs a single
            teacher. Defaults to `False`.
        name: logged name. Defaults to `"logits_distillation_loss"`.

    Example:

    ```python
    term = kdkeras.LogitsDistillation(temperature=4.0)
    distiller = kdkeras.Distiller(teacher, student, distillation_losses=term)
    ```

    Reference:
        Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network.
        https://arxiv.org/abs/1503.02531
    """

    def __init__(self, temperature=3.0, loss="kl_divergence", standardize=False, name=None):
        super().__init__(name=name)
        _check_temperature(temperature)
        _check_flag("standardize", standardize)
        self.temperature = temperature
        self.loss = loss
        self.standardize = standardize
        self._mode = self._resolve_mode(loss)

    @staticmethod
    def _resolve_mode(loss):
        if isinstance(loss, keras.losses.KLDivergence):
            return "kl"
        if isinstance(loss, keras.losses.CategoricalCrossentropy):
            return "ce"
        if isinstance(loss, str):
            key = loss.lower()
            if key in _KL_NAMES:
                return "kl"
            if key in _REVERSE_KL_NAMES:
                return "reverse_kl"
            if key in _CE_NAMES:
                return "ce"
        raise ValueError(
            "Expected `loss` to be one of "
            f"{list(_KL_NAMES + _REVERSE_KL_NAMES + _CE_NAMES)}, a "
            "keras.losses.KLDivergence or a keras.losses.CategoricalCrossentropy "
            f"instance. Received: loss={loss!r}"
        )

    def call(self, teacher_outputs, student_outputs, y=None):
        t, standardize = self.temperature, self.standardize
        if self._mode == "ce":
            fn = lambda a, b: soft_cross_entropy(a, b, t, standardize=standardize)
        else:
            reverse = self._mode == "reverse_kl"
            fn = lambda a, b: kd_loss(a, b, t, reverse=reverse, standardize=standardize)
        return _map_outputs(fn, teacher_outputs, student_outputs)

    def get_config(self):
        loss = self.loss
        if not isinstance(loss, str):
            loss = {"kl": "kl_divergence", "ce": "categorical_crossentropy"}[self._mode]
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "loss": loss,
            "standardize": self.standardize,
        }


@keras.saving.register_keras_serializable(package="kdkeras")
class DKD(DistillationLoss):
    """Decoupled knowledge distillation on the final outputs (see `dkd_loss`).

    Uses the batch's labels for the target class, or the teacher's argmax on
    unlabeled batches.

    Args:
        alpha: weight of the target-class term. Defaults to 1.0.
        beta: weight of the non-target-class term. Defaults to 8.0.
        temperature: softening temperature. Defaults to 4.0.
        standardize: z-score both logits per sample first (see
            `LogitsDistillation`); `temperature` is then the base
            temperature. Defaults to `False`.
        name: logged name. Defaults to `"dkd_loss"`.

    Reference:
        Zhao et al. Decoupled Knowledge Distillation. CVPR 2022.
        https://arxiv.org/abs/2203.08679
    """

    def __init__(self, alpha=1.0, beta=8.0, temperature=4.0, standardize=False, name=None):
        super().__init__(name=name)
        _check_temperature(temperature)
        _check_weight("alpha", alpha)
        _check_weight("beta", beta)
        _check_flag("standardize", standardize)
        self.alpha = alpha
        self.beta = beta
        self.temperature = temperature
        self.standardize = standardize

    def call(self, teacher_outputs, student_outputs, y=None):
        return dkd_loss(
            teacher_outputs,
            student_outputs,
            y=y,
            alpha=self.alpha,
            beta=self.beta,
            temperature=self.temperature,
            standardize=self.standardize,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "beta": self.beta,
            "temperature": self.temperature,
            "standardize": self.standardize,
        }


@keras.saving.register_keras_serializable(package="kdkeras")
class DIST(DistillationLoss):
    """DIST: correlation-based distillation from a stronger teacher.

    See `dist_loss`.

    Args:
        beta: weight of the inter-class relation. Defaults to 1.0.
        gamma: weight of the intra-class relation. Defaults to 1.0.
        temperature: softening temperature. Defaults to 1.0.
        standardize: z-score both logits per sample first (see
            `LogitsDistillation`); `temperature` is then the base
            temperature. Defaults to `False`.
        name: logged name. Defaults to `"dist_loss"`.

    Reference:
        Huang et al. Knowledge Distillation from A Stronger Teacher.
        NeurIPS 2022. https://arxiv.org/abs/2205.10536
    """

    needs_global_batch = True

    def __init__(self, beta=1.0, gamma=1.0, temperature=1.0, standardize=False, name=None):
        super().__init__(name=name)
        _check_temperature(temperature)
        _check_weight("beta", beta)
        _check_weight("gamma", gamma)
        _check_flag("standardize", standardize)
        self.beta = beta
        self.gamma = gamma
        self.temperature = temperature
        self.standardize = standardize

    def call(self, teacher_outputs, student_outputs, y=None):
        return dist_loss(
            teacher_outputs,
            student_outputs,
            beta=self.beta,
            gamma=self.gamma,
            temperature=self.temperature,
            standardize=self.standardize,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "beta": self.beta,
            "gamma": self.gamma,
            "temperature": self.temperature,
            "standardize": self.standardize,
        }
