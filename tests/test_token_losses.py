"""Token-level terms (`kdkeras.losses.tokens`) against NumPy references."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdkeras
from kdkeras import losses

BATCH, TIME, VOCAB = 3, 5, 11
RNG = np.random.default_rng(0)
T_LOGITS = (RNG.normal(size=(BATCH, TIME, VOCAB)) * 3).astype("float32")
S_LOGITS = (RNG.normal(size=(BATCH, TIME, VOCAB)) * 3).astype("float32")
# Sequences of 5, 3 and 1 real tokens, padded at the end.
MASK = (np.arange(TIME)[None, :] < np.array([5, 3, 1])[:, None]).astype("float32")


# ------------------------------------------------------------ NumPy references


def np_log_softmax(z):
    z = z.astype("float64")
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_kl(p, q):
    return (p * (np.log(p) - np.log(q))).sum(-1)


def np_divergence(kind, p, q, param):
    """Per-token divergences from probabilities, as the papers write them."""
    if kind == "kl":
        return np_kl(p, q)
    if kind == "reverse_kl":
        return np_kl(q, p)
    if kind == "jsd":
        if param == 0:
            return np_kl(p, q)
        if param == 1:
            return np_kl(q, p)
        m = param * p + (1 - param) * q
        return param * np_kl(p, m) + (1 - param) * np_kl(q, m)
    if kind == "skew_kl":
        return np_kl(p, param * p + (1 - param) * q)
    if kind == "skew_reverse_kl":
        return np_kl(q, (1 - param) * p + param * q)
    raise ValueError(kind)


def np_token_values(kind, t, s, param=None, temperature=1.0, mask=None):
    p = np.exp(np_log_softmax(t / temperature))
    q = np.exp(np_log_softmax(s / temperature))
    values = np_divergence(kind, p, q, param) * temperature**2
    return values if mask is None else np.where(mask != 0, values, 0.0)


def np_top_k_values(kind, t, s, k, param=None):
    """The divergence over the teacher's top-k tokens plus one bucket for the rest."""
    p = np.exp(np_log_softmax(t))
    q = np.exp(np_log_softmax(s))
    ids = np.argsort(-p, axis=-1)[..., :k]
    p_k = np.take_along_axis(p, ids, -1)
    q_k = np.take_along_axis(q, ids, -1)
    p_c = np.concatenate([p_k, 1 - p_k.sum(-1, keepdims=True)], -1)
    q_c = np.concatenate([q_k, 1 - q_k.sum(-1, keepdims=True)], -1)
    return np_divergence(kind, p_c, q_c, param)


def call(kind, t, s, param=None, **kwargs):
    if kind in ("kl", "reverse_kl"):
        return losses.token_kl_loss(t, s, reverse=kind == "reverse_kl", **kwargs)
    if kind == "jsd":
        return losses.generalized_jsd_loss(t, s, beta=param, **kwargs)
    return losses.skew_kl_loss(t, s, alpha=param, reverse=kind == "skew_reverse_kl", **kwargs)


# Every term at every limit of its parameter and inside the range.
CASES = [
    ("kl", None),
    ("reverse_kl", None),
    ("jsd", 0.0),
    ("jsd", 0.1),
    ("jsd", 0.5),
    ("jsd", 0.9),
    ("jsd", 1.0),
    ("skew_kl", 0.0),
    ("skew_kl", 0.1),
    ("skew_kl", 1.0),
    ("skew_reverse_kl", 0.0),
    ("skew_reverse_kl", 0.1),
    ("skew_reverse_kl", 1.0),
]
IDS = [f"{kind}-{param}" for kind, param in CASES]


@pytest.mark.parametrize("kind,param", CASES, ids=IDS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_terms_match_numpy_with_padding(kind, param, temperature):
    got = np.asarray(call(kind, T_LOGITS, S_LOGITS, param, temperature=temperature, mask=MASK))
    want = np_token_values(kind, T_LOGITS, S_LOGITS, param, temperature, MASK)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert np.all(got[MASK == 0] == 0.0)
    # Reduced over the 9 real tokens of the batch, each counted once.
    reduced = float(losses.reduce_per_token(got, MASK))
    assert reduced == pytest.approx(want[MASK != 0].sum() / 9, rel=1e-4, abs=1e-7)


def test_limits_of_beta_and_alpha_are_the_kls_not_zero():
    forward = np_token_values("kl", T_LOGITS, S_LOGITS)
    reverse = np_token_values("reverse_kl", T_LOGITS, S_LOGITS)
    assert forward.min() > 1e-3 and reverse.min() > 1e-3
    jsd = lambda beta: np.asarray(losses.generalized_jsd_loss(T_LOGITS, S_LOGITS, beta=beta))
    np.testing.assert_allclose(jsd(0.0), forward, rtol=1e-4)
    np.testing.assert_allclose(jsd(1.0), reverse, rtol=1e-4)
    # Near the ends the log-space mixture (no clamp) still matches float64,
    # and the endpoints are the limits of the normalised JSD:
    # JSD(beta) / beta -> forward KL, JSD(beta) / (1 - beta) -> reverse KL
    # (slowly, the gap shrinking with log(1 / beta)).
    gaps = []
    for eps in (1e-2, 1e-3, 1e-4):
        low, high = jsd(eps), jsd(1 - eps)
        np.testing.assert_allclose(
            low, np_token_values("jsd", T_LOGITS, S_LOGITS, eps), rtol=1e-3, atol=1e-9
        )
        np.testing.assert_allclose(
            high, np_token_values("jsd", T_LOGITS, S_LOGITS, 1 - eps), rtol=1e-3, atol=1e-9
        )
        gaps.append((np.abs(low / eps - forward).max(), np.abs(high / eps - reverse).max()))
    assert gaps[0][0] > gaps[1][0] > gaps[2][0] and gaps[0][1] > gaps[1][1] > gaps[2][1]
    skew = lambda alpha, reverse=False: np.asarray(
        losses.skew_kl_loss(T_LOGITS, S_LOGITS, alpha=alpha, reverse=reverse)
    )
    np.testing.assert_allclose(skew(0.0), forward, rtol=1e-4)
    np.testing.assert_allclose(skew(0.0, True), reverse, rtol=1e-4)
    assert np.all(skew(1.0) == 0.0) and np.all(skew(1.0, True) == 0.0)
    # Skewing bounds the divergence: it shrinks monotonically with alpha.
    assert np.all(skew(0.1) < forward) and np.all(skew(0.5) < skew(0.1))


@pytest.mark.parametrize("kind,param", CASES, ids=IDS)
def test_gradients_are_finite_at_every_limit(kind, param):
    s = tf.Variable(S_LOGITS * 10)  # confident students: probabilities underflow
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(call(kind, T_LOGITS * 10, s, param, mask=MASK))
    # (Skew KL at alpha = 1 is identically 0: unconnected to the student.)
    grad = tape.gradient(value, s, unconnected_gradients="zero").numpy()
    assert np.isfinite(float(value)) and np.all(np.isfinite(grad))
    assert np.all(grad[MASK == 0] == 0.0)


@pytest.mark.parametrize("kind,param", CASES, ids=IDS)
def test_float16_inputs_compute_in_float32(kind, param):
    t16, s16 = T_LOGITS.astype("float16"), S_LOGITS.astype("float16")
    got = call(kind, t16, s16, param, mask=MASK)
    assert got.dtype == "float32"
    want = np_token_values(kind, t16.astype("float64"), s16.astype("float64"), param, 1.0, MASK)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind,param", CASES, ids=IDS)
@pytest.mark.parametrize("top_k", [None, 4])
def test_terms_compile_with_xla(kind, param, top_k):
    def fn(t, s, m):
        teacher = t if top_k is None else losses.top_k_targets(t, top_k)
        return losses.reduce_per_token(call(kind, teacher, s, param, mask=m), m)

    args = [tf.constant(T_LOGITS), tf.constant(S_LOGITS), tf.constant(MASK)]
    eager = float(fn(*args))
    compiled = float(tf.function(fn, jit_compile=True)(*args))
    assert compiled == pytest.approx(eager, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("kind,param", CASES, ids=IDS)
def test_padding_changes_neither_loss_nor_gradient(kind, param):
    """Arbitrary logits at padded positions (huge, NaN, Inf): same loss, same gradients."""
    pad = MASK[..., None] == 0
    noise = np.random.default_rng(1).normal(size=T_LOGITS.shape).astype("float32") * 1e4
    noise[0, -1, 0] = np.nan  # position (0, 4) is real: left alone by `where`
    t_other = np.where(pad, noise, T_LOGITS).astype("float32")
    s_other = np.where(pad, -noise, S_LOGITS).astype("float32")
    t_other[2, 3, :] = np.inf
    s_other[1, 4, :] = np.nan
    results = []
    for t, s in ((T_LOGITS, S_LOGITS), (t_other, s_other)):
        s_var = tf.Variable(s)
        with tf.GradientTape() as tape:
            value = losses.reduce_per_token(call(kind, t, s_var, param, mask=MASK), MASK)
        grad = tape.gradient(value, s_var, unconnected_gradients="zero")
        results.append((float(value), grad.numpy()))
    (value_a, grad_a), (value_b, grad_b) = results
    assert value_a == value_b
    np.testing.assert_array_equal(grad_a, grad_b)
    assert np.all(grad_a[MASK == 0] == 0.0)
    assert np.abs(grad_a).max() > 0 or param == 1.0  # skew KL at alpha = 1 is 0


def test_token_mean_is_over_real_tokens_not_a_mean_of_sequence_means():
    values = np.array([[1.0, 1.0, 1.0, 1.0], [5.0, 9.0, 9.0, 9.0]], "float32")
    mask = np.array([[1, 1, 1, 1], [1, 0, 0, 0]], "float32")
    assert float(losses.reduce_per_token(values, mask)) == pytest.approx(9.0 / 5)
    assert float(losses.token_count(values, mask)) == 5.0
    # The mean of per-sequence means would be (1 + 5) / 2 = 3.
    assert float(losses.reduce_per_token(values)) == pytest.approx(36.0 / 8)
    # Weights weight, zeros mark padding; an explicit count overrides.
    weights = mask * np.array([[2.0], [1.0]], "float32")
    assert float(losses.reduce_per_token(values, weights)) == pytest.approx(13.0 / 5)
    assert float(losses.reduce_per_token(values, mask, count=2.0)) == pytest.approx(4.5)
    assert float(losses.reduce_per_token(values, np.zeros_like(mask))) == 0.0


def test_sequence_weights_of_shape_batch_broadcast_over_time():
    got = losses.generalized_jsd_loss(T_LOGITS, S_LOGITS, mask=np.array([1.0, 0.0, 2.0]))
    want = np_token_values("jsd", T_LOGITS, S_LOGITS, 0.5)
    want[1] = 0.0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------ vocabularies


def test_vocabularies_differing_by_a_padded_tail_are_cut_to_the_shared_size():
    padded = np.concatenate([T_LOGITS, np.full((BATCH, TIME, 5), -3.0, "float32")], -1)
    with pytest.raises(ValueError, match="teacher vocabulary size 16, student vocabulary size 11"):
        losses.token_kl_loss(padded, S_LOGITS)
    for kind, param in CASES:
        got = call(kind, padded, S_LOGITS, param, mask=MASK, vocab_size=VOCAB)
        want = np_token_values(kind, T_LOGITS, S_LOGITS, param, 1.0, MASK)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    # Cutting below both sizes is allowed, above either is not.
    np.testing.assert_allclose(
        losses.token_kl_loss(padded, S_LOGITS, vocab_size=7),
        np_token_values("kl", T_LOGITS[..., :7], S_LOGITS[..., :7]),
        rtol=1e-4,
    )
    with pytest.raises(ValueError, match="Received: vocab_size=12, teacher vocabulary size 16"):
        losses.token_kl_loss(padded, S_LOGITS, vocab_size=12)


def test_vocab_check_names_both_sizes_of_real_models():
    assert losses.check_vocab_sizes(151936, 151936) is None
    assert losses.check_vocab_sizes(152064, 151936, vocab_size=151936) == 151936
    with pytest.raises(ValueError, match="152064.*151936.*vocab_size=151936"):
        losses.check_vocab_sizes(152064, 151936)
    with pytest.raises(ValueError, match="Received: vocab_size=152064"):
        losses.check_vocab_sizes(152064, 151936, vocab_size=152064)
    with pytest.raises(ValueError, match="Received: vocab_size=0"):
        losses.check_vocab_sizes(8, 8, vocab_size=0)


# ------------------------------------------------------------ top-k targets


@pytest.mark.parametrize("kind,param", CASES, ids=IDS)
@pytest.mark.parametrize("k", [1, 4, VOCAB - 1, VOCAB])
def test_top_k_targets_match_numpy_top_k_plus_rest(kind, param, k):
    targets = losses.top_k_targets(T_LOGITS, k)
    assert targets[losses.TOP_K_IDS].dtype == "int32"
    assert tuple(targets[losses.TOP_K_LOG_PROBS].shape) == (BATCH, TIME, k)
    got = np.asarray(call(kind, targets, S_LOGITS, param, mask=MASK))
    if k == VOCAB:
        # Every token kept: the full-vocabulary value (the rest bucket is empty).
        want = np_token_values(kind, T_LOGITS, S_LOGITS, param, 1.0, MASK)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    else:
        # The teacher's rest bucket is 1 - sum(top-k probabilities) of
        # float32 log-probabilities: tiny buckets carry a relative error.
        want = np.where(MASK != 0, np_top_k_values(kind, T_LOGITS, S_LOGITS, k, param), 0.0)
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)


def test_top_k_saves_memory_and_bounds_the_full_vocabulary_loss():
    """A 512-token teacher with heavy-tailed logits, top-16 and top-64 kept.

    Memory per position (float32 logits vs int32 ids + float32
    log-probabilities): 2048 bytes -> 128 bytes for k = 16 (16x less),
    512 bytes for k = 64 (4x less). The top-16 hold 99.1% of the teacher's
    mass, the top-64 99.6%; the KL over the top-k plus the rest bucket is
    4.6% below the full-vocabulary KL for k = 16 (reverse KL: 5.6%), 2.2%
    (2.7%) for k = 64.
    Never above: merging tokens into one bucket can only lower a KL; the
    gap is the divergence among the merged tail tokens.
    """
    rng = np.random.default_rng(3)
    vocab = 512
    teacher = rng.standard_t(2, size=(4, 32, vocab)).astype("float32")
    student = (teacher + rng.normal(size=teacher.shape)).astype("float32")
    p = np.exp(np_log_softmax(teacher))
    full = {r: np.asarray(losses.token_kl_loss(teacher, student, reverse=r)) for r in (0, 1)}
    gaps = {}
    for k in (16, 64):
        targets = losses.top_k_targets(teacher, k)
        assert sum(np.asarray(v).nbytes for v in targets.values()) == 4 * 32 * k * 8
        for r in (0, 1):
            sparse = np.asarray(losses.token_kl_loss(targets, student, reverse=r))
            assert np.all(sparse <= full[r] + 1e-5)
            gaps[k, r] = 1 - sparse.mean() / full[r].mean()
    assert teacher.nbytes / (4 * 32 * 16 * 8) == 16.0
    assert np.sort(p, -1)[..., -16:].sum(-1).mean() == pytest.approx(0.991, abs=5e-4)
    assert gaps[16, 0] == pytest.approx(0.046, abs=0.002)
    assert gaps[16, 1] == pytest.approx(0.056, abs=0.002)
    assert gaps[64, 0] == pytest.approx(0.022, abs=0.002)
    assert gaps[64, 1] == pytest.approx(0.027, abs=0.002)


def test_top_k_refuses_temperature_and_bad_k():
    targets = losses.top_k_targets(T_LOGITS, 3)
    with pytest.raises(ValueError, match="Received: temperature=2.0"):
        losses.token_kl_loss(targets, S_LOGITS, temperature=2.0)
    with pytest.raises(ValueError, match=r"Expected `k` to be an integer in \[1, 11\]"):
        losses.top_k_targets(T_LOGITS, 12)
    with pytest.raises(ValueError, match="Received: k=0"):
        losses.top_k_targets(T_LOGITS, 0)
    cut = losses.top_k_targets(T_LOGITS, 3, vocab_size=5)
    assert int(np.max(cut[losses.TOP_K_IDS])) < 5


# ------------------------------------------------------------ classes and errors


TERMS = [
    (kdkeras.TokenDistillation(temperature=2.0), "kl", None, 2.0),
    (kdkeras.TokenDistillation(loss="reverse_kl_divergence"), "reverse_kl", None, 1.0),
    (kdkeras.GeneralizedJSD(beta=0.3), "jsd", 0.3, 1.0),
    (kdkeras.SkewKL(alpha=0.2), "skew_kl", 0.2, 1.0),
    (kdkeras.SkewKL(alpha=0.2, reverse=True, temperature=1.5), "skew_reverse_kl", 0.2, 1.5),
]


@pytest.mark.parametrize("term,kind,param,temperature", TERMS, ids=[t[1] for t in TERMS])
def test_classes_match_functions_and_round_trip(term, kind, param, temperature):
    want = np_token_values(kind, T_LOGITS, S_LOGITS, param, temperature, MASK)
    np.testing.assert_allclose(term.call(T_LOGITS, S_LOGITS, mask=MASK), want, rtol=1e-4, atol=1e-6)
    assert term.reduction == "sum_over_tokens"
    # compute_loss (keras.distillation's interface) reduces over real tokens.
    got = float(term.compute_loss(T_LOGITS, S_LOGITS, sample_weight=MASK))
    assert got == pytest.approx(want.sum() / MASK.sum(), rel=1e-4)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(term))
    assert type(restored) is type(term) and restored.get_config() == term.get_config()


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: kdkeras.GeneralizedJSD(beta=-0.1), "Received: beta=-0.1"),
        (lambda: kdkeras.GeneralizedJSD(beta=1.5), "Received: beta=1.5"),
        (lambda: kdkeras.GeneralizedJSD(beta=float("nan")), "Received: beta=nan"),
        (lambda: kdkeras.SkewKL(alpha=2), "Received: alpha=2"),
        (lambda: kdkeras.SkewKL(reverse="yes"), "Received: reverse='yes'"),
        (lambda: kdkeras.TokenDistillation(temperature=0), "Received: temperature=0"),
        (lambda: kdkeras.TokenDistillation(loss="mse"), "Received: loss='mse'"),
        (lambda: kdkeras.TokenDistillation(vocab_size=0), "Received: vocab_size=0"),
        (lambda: losses.token_kl_loss(T_LOGITS[0], S_LOGITS[0]), r"\[batch, time, vocab\]"),
        (lambda: losses.token_kl_loss(T_LOGITS, S_LOGITS, mask=MASK[:, :2]), "mask.shape"),
        (lambda: losses.generalized_jsd_loss(T_LOGITS, S_LOGITS, beta=2.0), "Received: beta=2.0"),
    ],
)
def test_bad_arguments_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()
