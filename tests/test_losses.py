"""Output distillation terms against NumPy references."""

import numpy as np
import pytest
import tensorflow as tf

import kdkeras
from kdkeras import losses


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _softmax(z):
    return np.exp(_log_softmax(z))


def np_kd(t, s, temp, reverse=False):
    log_p, log_q = _log_softmax(t / temp), _log_softmax(s / temp)
    if reverse:
        log_p, log_q = log_q, log_p
    return (np.exp(log_p) * (log_p - log_q)).sum(-1) * temp**2


def np_dkd(t, s, y, alpha, beta, temp):
    c = t.shape[-1]
    gt = np.eye(c)[y].astype(bool)
    pt, ps = _softmax(t / temp), _softmax(s / temp)
    bt = np.stack([pt[gt], 1 - pt[gt]], -1)
    bs = np.stack([ps[gt], 1 - ps[gt]], -1)
    tckd = (bt * (np.log(bt) - np.log(bs))).sum(-1)
    nt = _softmax(np.where(gt, -1e9, t / temp))
    ns = _softmax(np.where(gt, -1e9, s / temp))
    with np.errstate(divide="ignore", invalid="ignore"):
        nckd = np.where(gt, 0.0, nt * (np.log(nt) - np.log(ns))).sum(-1)
    return (alpha * tckd + beta * nckd) * temp**2


def np_dist(t, s, beta, gamma, temp):
    pt, ps = _softmax(t / temp), _softmax(s / temp)

    def pearson(a, b, axis):
        a = a - a.mean(axis, keepdims=True)
        b = b - b.mean(axis, keepdims=True)
        return (a * b).sum(axis) / (np.sqrt((a * a).sum(axis) * (b * b).sum(axis)) + 1e-8)

    inter = 1 - pearson(ps, pt, -1)
    intra = (1 - pearson(ps, pt, 0)).mean()
    return (beta * inter + gamma * intra) * temp**2


def np_standardize(z, eps=1e-7):
    # Population standard deviation, as in the paper (np.std's default).
    return (z - z.mean(-1, keepdims=True)) / (z.std(-1, keepdims=True) + eps)


RNG = np.random.default_rng(0)
T_LOGITS = RNG.normal(size=(6, 5)).astype("float32") * 3
S_LOGITS = RNG.normal(size=(6, 5)).astype("float32") * 3
LABELS = np.array([0, 1, 2, 3, 4, 0])


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 20.0])
@pytest.mark.parametrize("reverse", [False, True])
def test_kd_loss_matches_numpy(temperature, reverse):
    got = losses.kd_loss(T_LOGITS, S_LOGITS, temperature, reverse=reverse)
    want = np_kd(T_LOGITS.astype("float64"), S_LOGITS.astype("float64"), temperature, reverse)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_kd_loss_is_zero_for_equal_logits_and_positive_otherwise():
    np.testing.assert_allclose(losses.kd_loss(T_LOGITS, T_LOGITS), 0.0, atol=1e-6)
    assert np.all(np.asarray(losses.kd_loss(T_LOGITS, S_LOGITS)) > 0)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 50.0])
def test_kd_loss_finite_for_logits_of_magnitude_1e3(temperature):
    t = T_LOGITS * 1e3 / 3
    s = S_LOGITS * 1e3 / 3
    got = np.asarray(losses.kd_loss(t, s, temperature))
    assert np.all(np.isfinite(got))
    want = np_kd(t.astype("float64"), s.astype("float64"), temperature)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    grad_in = tf.constant(s)
    with tf.GradientTape() as tape:
        tape.watch(grad_in)
        value = tf.reduce_sum(losses.kd_loss(t, grad_in, temperature))
    assert np.all(np.isfinite(tape.gradient(value, grad_in)))


def test_kd_loss_t_squared_keeps_gradient_scale():
    # Hinton et al.: the T^2 factor keeps the soft-target gradient magnitude
    # roughly independent of T for large T (gradient -> (s - t) / (C T^2) * T^2).
    t = tf.constant(T_LOGITS / 3)
    s = tf.Variable(S_LOGITS / 3)
    norms = []
    for temperature in (10.0, 40.0):
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(losses.kd_loss(t, s, temperature))
        norms.append(float(tf.norm(tape.gradient(value, s))))
    assert norms[0] == pytest.approx(norms[1], rel=0.05)


def test_soft_cross_entropy_is_kd_plus_teacher_entropy():
    temperature = 3.0
    pt = _softmax(T_LOGITS / temperature)
    entropy = -(pt * np.log(pt)).sum(-1) * temperature**2
    got = losses.soft_cross_entropy(T_LOGITS, S_LOGITS, temperature)
    np.testing.assert_allclose(got, np_kd(T_LOGITS, S_LOGITS, temperature) + entropy, rtol=1e-4)


def test_dkd_matches_numpy():
    got = losses.dkd_loss(T_LOGITS, S_LOGITS, y=LABELS, alpha=1.0, beta=8.0, temperature=4.0)
    want = np_dkd(T_LOGITS.astype("float64"), S_LOGITS.astype("float64"), LABELS, 1.0, 8.0, 4.0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_dkd_accepts_one_hot_and_column_labels_and_falls_back_to_teacher_argmax():
    base = np.asarray(losses.dkd_loss(T_LOGITS, S_LOGITS, y=LABELS))
    np.testing.assert_allclose(
        losses.dkd_loss(T_LOGITS, S_LOGITS, y=np.eye(5)[LABELS]), base, rtol=1e-6
    )
    np.testing.assert_allclose(
        losses.dkd_loss(T_LOGITS, S_LOGITS, y=LABELS[:, None]), base, rtol=1e-6
    )
    argmax = T_LOGITS.argmax(-1)
    np.testing.assert_allclose(
        losses.dkd_loss(T_LOGITS, S_LOGITS, y=None),
        np_dkd(T_LOGITS.astype("float64"), S_LOGITS.astype("float64"), argmax, 1.0, 8.0, 4.0),
        rtol=1e-4,
    )


def test_dkd_with_alpha_one_beta_one_decomposes_classical_kd():
    # Zhao et al., Eq. 5: KD = TCKD + (1 - p_t^T) NCKD. With beta = 1 the NCKD
    # weight differs; check the identity directly from the two parts.
    temperature = 2.0
    tckd = np.asarray(losses.dkd_loss(T_LOGITS, S_LOGITS, LABELS, 1.0, 0.0, temperature))
    nckd = np.asarray(losses.dkd_loss(T_LOGITS, S_LOGITS, LABELS, 0.0, 1.0, temperature))
    pt_target = _softmax(T_LOGITS / temperature)[np.arange(6), LABELS]
    kd = np_kd(T_LOGITS, S_LOGITS, temperature)
    np.testing.assert_allclose(tckd + (1 - pt_target) * nckd, kd, rtol=1e-4)


def test_dist_matches_numpy():
    got = losses.dist_loss(T_LOGITS, S_LOGITS, beta=1.0, gamma=2.0, temperature=2.0)
    want = np_dist(T_LOGITS.astype("float64"), S_LOGITS.astype("float64"), 1.0, 2.0, 2.0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_ensemble_logits_soft_targets_are_weighted_average():
    temperature = 3.0
    z = losses.ensemble_logits([T_LOGITS, S_LOGITS], [1.0, 3.0], temperature)
    want = 0.25 * _softmax(T_LOGITS / temperature) + 0.75 * _softmax(S_LOGITS / temperature)
    np.testing.assert_allclose(_softmax(np.asarray(z) / temperature), want, atol=1e-6)


def test_standardize_logits_matches_numpy_mean_zero_std_one():
    z = np.asarray(losses.standardize_logits(T_LOGITS))
    np.testing.assert_allclose(z, np_standardize(T_LOGITS.astype("float64")), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z.mean(-1), 0.0, atol=1e-6)
    np.testing.assert_allclose(z.std(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_standardized_terms_match_numpy(temperature):
    t64, s64 = T_LOGITS.astype("float64"), S_LOGITS.astype("float64")
    zt, zs = np_standardize(t64), np_standardize(s64)
    # T^2 stays with standardization, as in the authors' code.
    np.testing.assert_allclose(
        losses.kd_loss(T_LOGITS, S_LOGITS, temperature, standardize=True),
        np_kd(zt, zs, temperature),
        rtol=1e-4,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        losses.kd_loss(T_LOGITS, S_LOGITS, temperature, reverse=True, standardize=True),
        np_kd(zt, zs, temperature, reverse=True),
        rtol=1e-4,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        losses.dkd_loss(T_LOGITS, S_LOGITS, y=LABELS, temperature=temperature, standardize=True),
        np_dkd(zt, zs, LABELS, 1.0, 8.0, temperature),
        rtol=1e-4,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        losses.dist_loss(T_LOGITS, S_LOGITS, 1.0, 2.0, temperature, standardize=True),
        np_dist(zt, zs, 1.0, 2.0, temperature),
        rtol=1e-4,
        atol=1e-6,
    )
    pt = _softmax(zt / temperature)
    entropy = -(pt * np.log(pt)).sum(-1) * temperature**2
    np.testing.assert_allclose(
        losses.soft_cross_entropy(T_LOGITS, S_LOGITS, temperature, standardize=True),
        np_kd(zt, zs, temperature) + entropy,
        rtol=1e-4,
    )


def test_standardized_kd_ignores_each_models_logit_shift_and_scale():
    # The point of the paper: only the logits' relations matter, not their
    # range, so a student need not match the teacher's magnitude.
    base = np.asarray(losses.kd_loss(T_LOGITS, S_LOGITS, 2.0, standardize=True))
    moved = losses.kd_loss(5.0 * T_LOGITS + 3.0, 0.2 * S_LOGITS - 7.0, 2.0, standardize=True)
    np.testing.assert_allclose(moved, base, rtol=1e-4, atol=1e-6)
    assert not np.allclose(
        losses.kd_loss(5.0 * T_LOGITS, S_LOGITS, 2.0), losses.kd_loss(T_LOGITS, S_LOGITS, 2.0)
    )


def test_standardized_gradient_is_finite_for_equal_logits():
    s = tf.Variable(np.zeros((2, 5), "float32"))
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(losses.kd_loss(T_LOGITS[:2], s, 2.0, standardize=True))
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(tape.gradient(value, s).numpy()))


def test_standardize_classes_match_functions_and_validate():
    for term, want in (
        (
            kdkeras.LogitsDistillation(2.0, standardize=True),
            losses.kd_loss(T_LOGITS, S_LOGITS, 2.0, standardize=True),
        ),
        (
            kdkeras.DKD(temperature=2.0, standardize=True),
            losses.dkd_loss(T_LOGITS, S_LOGITS, y=LABELS, temperature=2.0, standardize=True),
        ),
        (
            kdkeras.DIST(temperature=2.0, standardize=True),
            losses.dist_loss(T_LOGITS, S_LOGITS, temperature=2.0, standardize=True),
        ),
    ):
        np.testing.assert_allclose(term.call(T_LOGITS, S_LOGITS, y=LABELS), want, rtol=1e-6)
    for cls in (kdkeras.LogitsDistillation, kdkeras.DKD, kdkeras.DIST):
        with pytest.raises(ValueError, match="Received: standardize=1"):
            cls(standardize=1)


@pytest.mark.parametrize(
    "fn",
    [
        lambda t, s: losses.kd_loss(t, s, 4.0),
        lambda t, s: losses.kd_loss(t, s, 4.0, reverse=True),
        lambda t, s: losses.dkd_loss(t, s, y=tf.constant(LABELS)),
        lambda t, s: losses.dist_loss(t, s),
        lambda t, s: losses.ensemble_logits([t, s], [1.0, 1.0], 2.0),
        lambda t, s: losses.kd_loss(t, s, 2.0, standardize=True),
        lambda t, s: losses.dkd_loss(t, s, y=tf.constant(LABELS), standardize=True),
        lambda t, s: losses.dist_loss(t, s, standardize=True),
    ],
    ids=["kd", "reverse_kd", "dkd", "dist", "ensemble", "kd_ls", "dkd_ls", "dist_ls"],
)
def test_terms_compile_with_xla(fn):
    eager = np.asarray(fn(tf.constant(T_LOGITS), tf.constant(S_LOGITS)))
    compiled = tf.function(fn, jit_compile=True)(tf.constant(T_LOGITS), tf.constant(S_LOGITS))
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-6)


def test_reduce_per_sample_follows_keras_sum_over_batch_size():
    values = np.array([[1.0, 2.0], [3.0, 4.0]], "float32")
    weights = np.array([[1.0, 0.0], [1.0, 1.0]], "float32")
    assert float(losses.reduce_per_sample(values, weights)) == pytest.approx(8.0 / 4)
    assert float(losses.reduce_per_sample(values[:, 0], np.array([2.0, 0.0]))) == pytest.approx(1.0)
    assert float(losses.reduce_per_sample(values[:, 0], np.array([[2.0], [0.0]]))) == pytest.approx(
        1.0
    )
    assert float(losses.reduce_per_sample(values)) == pytest.approx(2.5)


def test_logits_distillation_class_matches_function_and_maps_keras_losses():
    import keras

    term = kdkeras.LogitsDistillation(temperature=4.0)
    np.testing.assert_allclose(
        term.call(T_LOGITS, S_LOGITS), np_kd(T_LOGITS, S_LOGITS, 4.0), rtol=1e-4
    )
    assert float(term.compute_loss(T_LOGITS, S_LOGITS)) == pytest.approx(
        np_kd(T_LOGITS, S_LOGITS, 4.0).mean(), rel=1e-4
    )
    keras_kl = kdkeras.LogitsDistillation(4.0, loss=keras.losses.KLDivergence())
    np.testing.assert_allclose(keras_kl.call(T_LOGITS, S_LOGITS), term.call(T_LOGITS, S_LOGITS))
    rev = kdkeras.LogitsDistillation(4.0, loss="reverse_kl_divergence")
    np.testing.assert_allclose(
        rev.call(T_LOGITS, S_LOGITS), np_kd(T_LOGITS, S_LOGITS, 4.0, True), rtol=1e-4
    )


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "3", True])
def test_temperature_must_be_positive_finite_number(bad):
    with pytest.raises(ValueError, match="temperature"):
        kdkeras.LogitsDistillation(temperature=bad)
    with pytest.raises(ValueError, match="temperature"):
        kdkeras.DKD(temperature=bad)


@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan"), True, "1"])
def test_dkd_and_dist_weights_must_be_finite_non_negative_numbers(bad):
    with pytest.raises(ValueError, match="Received: beta="):
        kdkeras.DKD(beta=bad)
    with pytest.raises(ValueError, match="Received: gamma="):
        kdkeras.DIST(gamma=bad)


def test_unknown_logits_loss_is_refused():
    with pytest.raises(ValueError, match="Received: loss='mse'"):
        kdkeras.LogitsDistillation(loss="mse")


@pytest.mark.parametrize(
    "term",
    [
        kdkeras.LogitsDistillation(temperature=2.5, loss="reverse_kl_divergence", name="kd"),
        kdkeras.DKD(alpha=0.5, beta=4.0, temperature=2.0),
        kdkeras.DIST(beta=2.0, gamma=0.5, temperature=1.5),
        kdkeras.LogitsDistillation(temperature=2.0, standardize=True),
        kdkeras.DKD(temperature=2.0, standardize=True, name="dkd_ls"),
        kdkeras.DIST(standardize=True),
        kdkeras.FeatureDistillation(loss="mae", teacher_layer_name="a", student_layer_name="b"),
    ],
    ids=lambda t: type(t).__name__,
)
def test_terms_round_trip_through_keras_serialization(term):
    import keras

    config = keras.saving.serialize_keras_object(term)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(term)
    assert restored.get_config() == term.get_config()
    assert getattr(restored, "standardize", False) == getattr(term, "standardize", False)
    np.testing.assert_allclose(
        restored.call(T_LOGITS, S_LOGITS, y=LABELS), term.call(T_LOGITS, S_LOGITS, y=LABELS)
    )


@pytest.mark.parametrize("margin", [10.0, 20.0, 30.0])
@pytest.mark.parametrize("noise", [0.0, 1.0])
def test_dist_gradient_is_finite_for_confident_models(margin, noise):
    # Confident models: each class column of the probabilities is almost
    # constant across the batch (classes 5-9 appear in no label), its squared
    # deviations underflow, and the old sqrt(sum(a^2) * sum(b^2)) denominator
    # gave NaN gradients (at margins of 10 and 20 nats here).
    import tensorflow as tf

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 16)
    teacher = np.eye(10, dtype="float32")[labels] * margin
    noisy = teacher + noise * rng.normal(size=(16, 10)).astype("float32")
    student = tf.Variable(noisy)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(losses.dist_loss(teacher, student))
    grad = tape.gradient(loss, student)
    assert np.isfinite(float(loss))
    assert np.all(np.isfinite(grad.numpy()))
