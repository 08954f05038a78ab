"""Token-level distillation terms for language models, on `[batch, time, vocab]` logits.

Each term is a pure `keras.ops` function returning per-token values of shape
`[batch, time]`, plus a thin class that the `Distiller` reduces over the
real tokens of the whole batch (`reduce_per_token`: divided by the token
count, not a mean of per-sequence means). Padding is given as `mask`
(`[batch, time]`, non-zero = real token): the logits at padded positions are
replaced before any arithmetic and the values there are 0, so whatever the
padded positions hold changes neither the loss nor its gradient.

All divergences are computed from log-probabilities in float32 (float16 and
bfloat16 inputs are cast first); mixtures are formed in log space with
`logaddexp`, so no probability is clamped. As in `kd_loss`, every value is
multiplied by `T^2` (the only place where it is), which is 1 at the default
temperature of 1.

The teacher may also be given as top-k targets (`top_k_targets`: the ids
and log-probabilities of its `k` most likely tokens per position, what
`Distiller.cache_teacher_outputs(..., top_k=k)` stores). The divergences are
then taken over `k + 1` events: the teacher's top-k tokens and one bucket
holding the remaining mass of each distribution. Coarse-graining can only
lower a divergence, so the top-k value is a lower bound of the
full-vocabulary one, equal to it when the top-k hold all the mass.

Reference:
    Gu, Dong, Wei, Huang. MiniLLM: Knowledge Distillation of Large Language
    Models. ICLR 2024. https://arxiv.org/abs/2306.08543
    Agarwal et al. On-Policy Distillation of Language Models: Learning from
    Self-Generated Mistakes (GKD). ICLR 2024. https://arxiv.org/abs/2306.13649
    Ko, Kim, Chen, Yun. DistiLLM: Towards Streamlined Distillation for Large
    Language Models. ICML 2024. https://arxiv.org/abs/2402.03898
"""

import math

import keras
from keras import ops

from kdkeras.losses.base import DistillationLoss
from kdkeras.losses.base import is_finite_number
from kdkeras.losses.base import reduce_per_token

__all__ = [
    "GeneralizedJSD",
    "SkewKL",
    "TOP_K_IDS",
    "TOP_K_LOG_PROBS",
    "TokenDistillation",
    "TokenDistillationLoss",
    "check_vocab_sizes",
    "generalized_jsd_loss",
    "is_top_k",
    "skew_kl_loss",
    "token_kl_loss",
    "top_k_targets",
]

TOP_K_IDS = "top_k_ids"
TOP_K_LOG_PROBS = "top_k_log_probs"

# The bucket of mass outside the teacher's top-k is floored at 1e-30 (in
# log space) when it vanishes (k equal to the vocabulary, or a student that
# put every bit of its mass on the top-k): log(0) would make the divergence
# infinite and its gradient NaN. Below 1e-30 the bucket carries no
# information a float32 loss could use.
_LOG_TINY = math.log(1e-30)
# Finite stand-in for -inf when masking entries out of a logsumexp, so that
# an all-masked row gives a finite value and a finite gradient.
_NEG = -1e30


# ------------------------------------------------------------ argument checks


def _check_temperature(temperature):
    # A tensor (the Distiller's scheduled temperature) is not checked here.
    if isinstance(temperature, (bool, int, float)) and (
        not is_finite_number(temperature) or temperature <= 0
    ):
        raise ValueError(
            "Expected `temperature` to be a finite number > 0. "
            f"Received: temperature={temperature!r}"
        )


def _check_fraction(arg, value):
    if not is_finite_number(value) or not 0 <= value <= 1:
        raise ValueError(f"Expected `{arg}` to be a number in [0, 1]. Received: {arg}={value!r}")


def _check_vocab_size(vocab_size):
    if vocab_size is not None and (
        not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 1
    ):
        raise ValueError(
            f"Expected `vocab_size` to be None or an integer >= 1. Received: vocab_size={vocab_size!r}"
        )


def check_vocab_sizes(teacher_vocab, student_vocab, vocab_size=None):
    """Checks that teacher and student logits can be compared token by token.

    Equal vocabularies pass. Vocabularies that differ only by a padded tail
    (for example 152064 and 151936 entries, where the larger model pads its
    embedding table to a multiple of 128) are compared over the first
    `vocab_size` entries of both, which must then be given and be at most
    the smaller size. Any other mismatch is refused.

    Args:
        teacher_vocab: the last axis of the teacher's logits, or `None` when
            unknown.
        student_vocab: the same for the student.
        vocab_size: the shared vocabulary size to cut both to, or `None`.

    Returns:
        The size to cut both logits to, or `None` to use them as they are.

    Raises:
        ValueError: naming both sizes, when they differ and `vocab_size` is
            `None`, or when `vocab_size` exceeds either of them.
    """
    _check_vocab_size(vocab_size)
    if vocab_size is not None:
        for size in (teacher_vocab, student_vocab):
            if size is not None and size < vocab_size:
                raise ValueError(
                    "Expected `vocab_size` at most the teacher's and the student's "
                    f"vocabulary sizes. Received: vocab_size={vocab_size}, teacher "
                    f"vocabulary size {teacher_vocab}, student vocabulary size "
                    f"{student_vocab}"
                )
        return vocab_size
    if teacher_vocab is not None and student_vocab is not None and teacher_vocab != student_vocab:
        raise ValueError(
            "Expected the teacher and the student to share one vocabulary (the "
            "last axis of their logits). Received: teacher vocabulary size "
            f"{teacher_vocab}, student vocabulary size {student_vocab}. If they "
            "differ only by a padded tail (embedding tables padded to a "
            "multiple of 64 or 128), pass "
            f"vocab_size={min(teacher_vocab, student_vocab)} to compare the "
            "shared tokens; other mismatches need a common tokenizer."
        )
    return None


# ------------------------------------------------------------ inputs


def is_top_k(teacher):
    """Whether `teacher` holds top-k targets (see `top_k_targets`) rather than logits."""
    return isinstance(teacher, dict) and TOP_K_IDS in teacher and TOP_K_LOG_PROBS in teacher


def top_k_targets(teacher_logits, k, vocab_size=None):
    """The teacher's `k` most likely tokens per position and their log-probabilities.

    What a top-k teacher cache stores instead of the full logits: `2 * k`
    numbers per position rather than `vocab`.

    Args:
        teacher_logits: `[batch, time, vocab]` logits of the teacher.
        k: how many tokens to keep per position, `1 <= k <= vocab`.
        vocab_size: cut the logits to their first `vocab_size` entries first
            (a padded tail, see `check_vocab_sizes`). Defaults to `None`.

    Returns:
        A dict: `TOP_K_IDS`, int32 `[batch, time, k]`, and `TOP_K_LOG_PROBS`,
        float32 `[batch, time, k]` (log-softmax at temperature 1, in
        decreasing order).
    """
    logits = _logits(teacher_logits, "teacher_logits")
    _check_vocab_size(vocab_size)
    if vocab_size is not None:
        check_vocab_sizes(logits.shape[-1], None, vocab_size)
        logits = logits[..., :vocab_size]
    vocab = logits.shape[-1]
    if not isinstance(k, int) or isinstance(k, bool) or k < 1 or (vocab is not None and k > vocab):
        raise ValueError(
            f"Expected `k` to be an integer in [1, {vocab}] (the vocabulary). Received: k={k!r}"
        )
    values, ids = ops.top_k(ops.log_softmax(logits, axis=-1), k)
    return {TOP_K_IDS: ops.cast(ids, "int32"), TOP_K_LOG_PROBS: values}


def _logits(value, name):
    value = ops.convert_to_tensor(value)
    if len(value.shape) != 3:
        raise ValueError(
            f"Expected `{name}` of shape [batch, time, vocab]. "
            f"Received: {name}.shape={tuple(value.shape)}"
        )
    return ops.cast(value, "float32")


def _real_tokens(mask, student):
    """`[batch, time]` booleans, True at real tokens, from a mask or weights; or None."""
    if mask is None:
        return None
    mask = ops.convert_to_tensor(mask)
    if mask.dtype != "bool":
        mask = ops.not_equal(ops.cast(mask, "float32"), 0.0)
    while len(mask.shape) > 2 and mask.shape[-1] in (1, None):
        mask = ops.squeeze(mask, axis=-1)
    while len(mask.shape) < 2:
        mask = ops.expand_dims(mask, axis=-1)
    if len(mask.shape) != 2 or any(
        a is not None and b is not None and a != b and a != 1
        for a, b in zip(mask.shape, student.shape[:2])
    ):
        raise ValueError(
            "Expected `mask` of shape [batch, time] (or [batch]) matching the "
            f"logits {tuple(student.shape)}. Received: mask.shape={tuple(mask.shape)}"
        )
    return ops.logical_and(mask, ops.ones_like(student[..., 0], dtype="bool"))


def _top_k_log_probs(teacher, student, real):
    """Teacher and student log-probabilities over the top-k plus the rest bucket."""
    ids = ops.cast(ops.convert_to_tensor(teacher[TOP_K_IDS]), "int32")
    log_p_k = ops.cast(ops.convert_to_tensor(teacher[TOP_K_LOG_PROBS]), "float32")
    if len(ids.shape) != 3 or tuple(ids.shape) != tuple(log_p_k.shape):
        raise ValueError(
            "Expected top-k targets with ids and log-probabilities of one shape "
            f"[batch, time, k]. Received: {TOP_K_IDS}.shape={tuple(ids.shape)}, "
            f"{TOP_K_LOG_PROBS}.shape={tuple(log_p_k.shape)}"
        )
    k = ops.shape(ids)[-1]  # a tensor when the cache's shapes are unknown
    if real is not None:
        # Any finite stand-in: the values at padded positions are dropped.
        ids = ops.where(real[..., None], ids, 0)
        log_p_k = ops.where(real[..., None], log_p_k, 0.0)
    log_q_all = ops.log_softmax(student, axis=-1)
    log_q_k = ops.take_along_axis(log_q_all, ids, axis=-1)

    # The student's mass outside the teacher's top-k, summed exactly over
    # those tokens (1 - sum(q_topk) would cancel catastrophically when the
    # student puts almost all its mass on them).
    shape = ops.shape(log_q_all)
    rows = ops.shape(ids)[0] * ops.shape(ids)[1]
    flat = ops.reshape(ids, (-1,))
    coords = ops.stack([ops.repeat(ops.arange(rows), k), flat], axis=-1)
    hit = ops.scatter(coords, ops.ones_like(flat, dtype="float32"), (rows, shape[-1]))
    hit = ops.reshape(hit > 0, shape)
    log_q_rest = ops.logsumexp(ops.where(hit, _NEG, log_q_all), axis=-1)
    log_q_rest = ops.maximum(log_q_rest, _LOG_TINY)

    # The teacher's rest is known only as 1 - sum(p_topk); expm1 keeps it
    # accurate down to float32 rounding of the stored log-probabilities.
    covered = ops.minimum(ops.logsumexp(log_p_k, axis=-1), 0.0)
    log_p_rest = ops.log(ops.maximum(-ops.expm1(covered), math.exp(_LOG_TINY)))

    log_p = ops.concatenate([log_p_k, log_p_rest[..., None]], axis=-1)
    log_q = ops.concatenate([log_q_k, log_q_rest[..., None]], axis=-1)
    return log_p, log_q


def _log_probs(teacher_logits, student_logits, temperature, mask, vocab_size):
    """`(log_p, log_q, real)`: teacher and student log-probabilities over the same events."""
    _check_temperature(temperature)
    student = _logits(student_logits, "student_logits")
    real = _real_tokens(mask, student)
    if real is not None:
        # Replaced before any arithmetic: a NaN or 1e30 at a padded position
        # must not reach the gradient through 0 * NaN.
        student = ops.where(real[..., None], student, 0.0)
    if is_top_k(teacher_logits):
        if is_finite_number(temperature) and temperature != 1:
            raise ValueError(
                "Expected temperature=1 with top-k teacher targets: they hold "
                "log-probabilities at temperature 1, and the mass outside the "
                "top-k cannot be re-softened. Received: "
                f"temperature={temperature!r}"
            )
        size = check_vocab_sizes(None, student.shape[-1], vocab_size)
        if size is not None:
            student = student[..., :size]
        log_p, log_q = _top_k_log_probs(teacher_logits, student / temperature, real)
        return log_p, log_q, real
    teacher = _logits(teacher_logits, "teacher_logits")
    size = check_vocab_sizes(teacher.shape[-1], student.shape[-1], vocab_size)
    if size is not None:
        teacher, student = teacher[..., :size], student[..., :size]
    if real is not None:
        teacher = ops.where(real[..., None], teacher, 0.0)
    log_p = ops.log_softmax(teacher / temperature, axis=-1)
    log_q = ops.log_softmax(student / temperature, axis=-1)
    return log_p, log_q, real


def _kl(log_p, log_q):
    """`KL(p || q)` over the last axis, from log-probabilities."""
    return ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)


def _log_mix(log_p, log_q, weight):
    """`log(weight * p + (1 - weight) * q)`, exactly `log_p` / `log_q` at the ends."""
    if weight == 0:
        return log_q
    if weight == 1:
        return log_p
    return ops.logaddexp(log_p + math.log(weight), log_q + math.log1p(-weight))


def _finish(values, temperature, real):
    values = values * (temperature**2)
    if real is None:
        return values
    return ops.where(real, values, 0.0)


# ------------------------------------------------------------ pure functions


def token_kl_loss(
    teacher_logits, student_logits, temperature=1.0, reverse=False, mask=None, vocab_size=None
):
    """Forward or reverse KL between the teacher's and the student's next-token distributions.

    `T^2 * KL(p_t || p_s)` per token (forward, mean-seeking, word-level KD),
    or `T^2 * KL(p_s || p_t)` with `reverse=True` (mode-seeking, MiniLLM's
    objective: the student does not spread mass where the teacher has
    none), where `p = softmax(logits / T)`.

    Args:
        teacher_logits: `[batch, time, vocab]` logits, or top-k targets
            (`top_k_targets`, temperature 1 only).
        student_logits: `[batch, time, vocab]` logits.
        temperature: softening temperature `T > 0`. Defaults to 1.0.
        reverse: compute `KL(p_s || p_t)`. Defaults to `False`.
        mask: `[batch, time]` (or `[batch]`), non-zero at real tokens.
            Defaults to `None` (every token is real).
        vocab_size: compare the first `vocab_size` entries of both
            vocabularies (see `check_vocab_sizes`). Defaults to `None`.

    Returns:
        `[batch, time]` float32 values, 0 at padded positions.

    Reference:
        Gu et al. MiniLLM: Knowledge Distillation of Large Language Models.
        ICLR 2024. https://arxiv.org/abs/2306.08543
    """
    log_p, log_q, real = _log_probs(teacher_logits, student_logits, temperature, mask, vocab_size)
    values = _kl(log_q, log_p) if reverse else _kl(log_p, log_q)
    return _finish(values, temperature, real)


def generalized_jsd_loss(
    teacher_logits, student_logits, beta=0.5, temperature=1.0, mask=None, vocab_size=None
):
    """Generalized Jensen-Shannon divergence of GKD, interpolating forward and reverse KL.

    With `m = beta * p_t + (1 - beta) * p_s` (formed in log space), for
    `0 < beta < 1`:
    `JSD(beta) = beta * KL(p_t || m) + (1 - beta) * KL(p_s || m)`, times
    `T^2`. `JSD(beta) / beta` tends to the forward KL `KL(p_t || p_s)` as
    `beta -> 0` and `JSD(beta) / (1 - beta)` to the reverse KL `KL(p_s ||
    p_t)` as `beta -> 1`; at `beta = 0` and `beta = 1` the function returns
    these limits (as GKD and TRL define them), not the vanishing JSD
    values that a clamped `beta` would give.

    Args:
        teacher_logits: `[batch, time, vocab]` logits, or top-k targets
            (`top_k_targets`, temperature 1 only).
        student_logits: `[batch, time, vocab]` logits.
        beta: the teacher's share of the mixture, in `[0, 1]`. Defaults to
            0.5 (the symmetric JSD).
        temperature: softening temperature `T > 0`. Defaults to 1.0.
        mask: `[batch, time]` (or `[batch]`), non-zero at real tokens.
        vocab_size: compare the first `vocab_size` entries of both
            vocabularies (see `check_vocab_sizes`). Defaults to `None`.

    Returns:
        `[batch, time]` float32 values, 0 at padded positions.

    Reference:
        Agarwal et al. On-Policy Distillation of Language Models: Learning
        from Self-Generated Mistakes. ICLR 2024.
        https://arxiv.org/abs/2306.13649
    """
    _check_fraction("beta", beta)
    log_p, log_q, real = _log_probs(teacher_logits, student_logits, temperature, mask, vocab_size)
    if beta == 0:
        values = _kl(log_p, log_q)
    elif beta == 1:
        values = _kl(log_q, log_p)
    else:
        log_m = _log_mix(log_p, log_q, beta)
        values = beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)
    return _finish(values, temperature, real)


def skew_kl_loss(
    teacher_logits,
    student_logits,
    alpha=0.1,
    reverse=False,
    temperature=1.0,
    mask=None,
    vocab_size=None,
):
    """Skew KL or skew reverse KL of DistiLLM.

    Skew KL: `KL(p_t || alpha * p_t + (1 - alpha) * p_s)`; skew reverse KL
    (`reverse=True`): `KL(p_s || (1 - alpha) * p_t + alpha * p_s)`; times
    `T^2`. Mixing a little of the first distribution into the second bounds
    the divergence and its gradient where the second has almost no mass.
    `alpha = 0` gives the forward (or reverse) KL exactly, `alpha = 1` gives
    0.

    Args:
        teacher_logits: `[batch, time, vocab]` logits, or top-k targets
            (`top_k_targets`, temperature 1 only).
        student_logits: `[batch, time, vocab]` logits.
        alpha: the skew, in `[0, 1]`. Defaults to 0.1 (DistiLLM's value).
        reverse: the skew reverse KL. Defaults to `False`.
        temperature: softening temperature `T > 0`. Defaults to 1.0.
        mask: `[batch, time]` (or `[batch]`), non-zero at real tokens.
        vocab_size: compare the first `vocab_size` entries of both
            vocabularies (see `check_vocab_sizes`). Defaults to `None`.

    Returns:
        `[batch, time]` float32 values, 0 at padded positions.

    Reference:
        Ko, Kim, Chen, Yun. DistiLLM: Towards Streamlined Distillation for
        Large Language Models. ICML 2024. https://arxiv.org/abs/2402.03898
    """
    _check_fraction("alpha", alpha)
    log_p, log_q, real = _log_probs(teacher_logits, student_logits, temperature, mask, vocab_size)
    if reverse:
        values = _kl(log_q, _log_mix(log_q, log_p, alpha))
    else:
        values = _kl(log_p, _log_mix(log_p, log_q, alpha))
    return _finish(values, temperature, real)


# ------------------------------------------------------------ classes


class TokenDistillationLoss(DistillationLoss):
    """Base class of the token-level terms: one value per token, reduced over real tokens.

    `call(teacher_outputs, student_outputs, y=None, mask=None)` returns
    `[batch, time]` values; the `Distiller` passes the batch's padding mask
    (sample weights, or the Keras mask of the student's output) as `mask`
    and divides the weighted sum by the number of real tokens of the whole
    batch, across replicas too (`reduction = "sum_over_tokens"`).

    Args:
        temperature: softening temperature `T > 0`.
        vocab_size: compare the first `vocab_size` entries of the teacher's
            and the student's vocabularies (see `check_vocab_sizes`).
        name: the logged name.
    """

    reduction = "sum_over_tokens"

    def __init__(self, temperature=1.0, vocab_size=None, name=None):
        super().__init__(name=name)
        if not is_finite_number(temperature) or temperature <= 0:
            raise ValueError(
                "Expected `temperature` to be a finite number > 0. "
                f"Received: temperature={temperature!r}"
            )
        _check_vocab_size(vocab_size)
        self.temperature = temperature
        self.vocab_size = vocab_size

    def token_values(self, teacher_outputs, student_outputs, mask):
        raise NotImplementedError

    def call(self, teacher_outputs, student_outputs, y=None, mask=None):
        if isinstance(student_outputs, (list, tuple, dict)):
            raise ValueError(
                f"Expected the student's output to be one [batch, time, vocab] tensor for "
                f"{type(self).__name__}. Received: a {type(student_outputs).__name__} of outputs"
            )
        return self.token_values(teacher_outputs, student_outputs, mask)

    def compute_loss(self, teacher_outputs, student_outputs, sample_weight=None, y=None, **kwargs):
        """The mean over real tokens (non-zero `sample_weight`) of `call(...)`."""
        values = self.call(teacher_outputs, student_outputs, y=y, mask=sample_weight)
        return reduce_per_token(values, sample_weight)

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "vocab_size": self.vocab_size,
        }


@keras.saving.register_keras_serializable(package="kdkeras")
class TokenDistillation(TokenDistillationLoss):
    """Token-level KD for language models: forward or reverse KL per token.

    See `token_kl_loss`. Reduced over the real tokens of the batch.

    Args:
        temperature: softening temperature `T > 0`. Defaults to 1.0.
        loss: `"kl_divergence"` (forward, the default) or
            `"reverse_kl_divergence"` (MiniLLM).
        vocab_size: compare the first `vocab_size` entries of both
            vocabularies when they differ by a padded tail. Defaults to
            `None`.
        name: logged name. Defaults to `"token_distillation_loss"`.

    Example:

    ```python
    term = kdkeras.TokenDistillation(loss="reverse_kl_divergence")
    distiller = kdkeras.Distiller(teacher_lm, student_lm, term, student_loss_weight=0.5)
    distiller.fit(tokens, next_tokens, sample_weight=padding_mask)
    ```

    Reference:
        Gu et al. MiniLLM: Knowledge Distillation of Large Language Models.
        ICLR 2024. https://arxiv.org/abs/2306.08543
    """

    _LOSSES = {"kl_divergence": False, "reverse_kl_divergence": True}

    def __init__(self, temperature=1.0, loss="kl_divergence", vocab_size=None, name=None):
        super().__init__(temperature=temperature, vocab_size=vocab_size, name=name)
        if loss not in self._LOSSES:
            raise ValueError(
                f"Expected `loss` to be one of {sorted(self._LOSSES)}. Received: loss={loss!r}"
            )
        self.loss = loss

    def token_values(self, teacher_outputs, student_outputs, mask):
        return token_kl_loss(
            teacher_outputs,
            student_outputs,
            temperature=self.temperature,
            reverse=self._LOSSES[self.loss],
            mask=mask,
            vocab_size=self.vocab_size,
        )

    def get_config(self):
        return {**super().get_config(), "loss": self.loss}


@keras.saving.register_keras_serializable(package="kdkeras")
class GeneralizedJSD(TokenDistillationLoss):
    """GKD's generalized Jensen-Shannon divergence per token (see `generalized_jsd_loss`).

    Args:
        beta: the teacher's share of the mixture in `[0, 1]`; 0 is the
            forward KL, 1 the reverse KL. Defaults to 0.5.
        temperature: softening temperature `T > 0`. Defaults to 1.0.
        vocab_size: compare the first `vocab_size` entries of both
            vocabularies. Defaults to `None`.
        name: logged name. Defaults to `"generalized_jsd_loss"`.

    Reference:
        Agarwal et al. On-Policy Distillation of Language Models: Learning
        from Self-Generated Mistakes. ICLR 2024.
        https://arxiv.org/abs/2306.13649
    """

    def __init__(self, beta=0.5, temperature=1.0, vocab_size=None, name=None):
        super().__init__(temperature=temperature, vocab_size=vocab_size, name=name)
        _check_fraction("beta", beta)
        self.beta = beta

    def token_values(self, teacher_outputs, student_outputs, mask):
        return generalized_jsd_loss(
            teacher_outputs,
            student_outputs,
            beta=self.beta,
            temperature=self.temperature,
            mask=mask,
            vocab_size=self.vocab_size,
        )

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}


@keras.saving.register_keras_serializable(package="kdkeras")
class SkewKL(TokenDistillationLoss):
    """DistiLLM's skew KL (or skew reverse KL) per token (see `skew_kl_loss`).

    Args:
        alpha: the skew in `[0, 1]`; 0 is the plain KL. Defaults to 0.1.
        reverse: the skew reverse KL. Defaults to `False`.
        temperature: softening temperature `T > 0`. Defaults to 1.0.
        vocab_size: compare the first `vocab_size` entries of both
            vocabularies. Defaults to `None`.
        name: logged name. Defaults to `"skew_kl_loss"`.

    Reference:
        Ko, Kim, Chen, Yun. DistiLLM: Towards Streamlined Distillation for
        Large Language Models. ICML 2024. https://arxiv.org/abs/2402.03898
    """

    def __init__(self, alpha=0.1, reverse=False, temperature=1.0, vocab_size=None, name=None):
        super().__init__(temperature=temperature, vocab_size=vocab_size, name=name)
        _check_fraction("alpha", alpha)
        if not isinstance(reverse, bool):
            raise ValueError(f"Expected `reverse` to be a bool. Received: reverse={reverse!r}")
        self.alpha = alpha
        self.reverse = reverse

    def token_values(self, teacher_outputs, student_outputs, mask):
        return skew_kl_loss(
            teacher_outputs,
            student_outputs,
            alpha=self.alpha,
            reverse=self.reverse,
            temperature=self.temperature,
            mask=mask,
            vocab_size=self.vocab_size,
        )

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "reverse": self.reverse}
