"""Feature terms against hand-written NumPy references, eager / graph / XLA."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdkeras
from kdkeras import losses

MODES = ["eager", "graph", "xla"]


def run(fn, mode, *args):
    args = [tf.constant(a) for a in args]
    if mode == "eager":
        out = fn(*args)
    else:
        out = tf.function(fn, jit_compile=(mode == "xla"))(*args)
    return np.asarray(out)


def rng(seed=0):
    return np.random.default_rng(seed)


# ------------------------------------------------------ NumPy references


def np_flat(x):
    return x.reshape(len(x), -1).astype(np.float64)


def np_at(t, s, p=2.0):
    def amap(f):
        a = np.mean(np.abs(f.astype(np.float64)) ** p, axis=-1)
        return a

    at, as_ = amap(t), amap(s)
    if at.shape != as_.shape:  # pool the larger by its integer factor
        big, small = (at, as_) if at.size > as_.size else (as_, at)
        n, h, w = big.shape
        fh, fw = h // small.shape[1], w // small.shape[2]
        big = big.reshape(n, h // fh, fh, w // fw, fw).mean(axis=(2, 4))
        at, as_ = (big, small) if at.size > as_.size else (small, big)

    def norm(a):
        a = a.reshape(len(a), -1)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    return np.mean((norm(as_) - norm(at)) ** 2, axis=1)


def np_huber(x):
    a = np.abs(x)
    return np.where(a < 1, 0.5 * x**2, a - 0.5)


def np_rkd_distance(t, s):
    # As the authors' pdist: squared distances clamped at 1e-12, zero
    # diagonal, so duplicates count as (tiny) positive distances.
    def nd(e):
        e = np_flat(e)
        d = np.sqrt(np.maximum(((e[:, None, :] - e[None, :, :]) ** 2).sum(-1), 1e-12))
        np.fill_diagonal(d, 0.0)
        return d / d[d > 0].mean()

    return np_huber(nd(s) - nd(t)).mean(axis=1)


def np_rkd_angle(t, s):
    # The authors' formulation: normalized difference vectors, (n, n, dim).
    def angles(e):
        e = np_flat(e)
        diff = e[None, :, :] - e[:, None, :]  # diff[a, b] = e_b - e_a
        norm = np.linalg.norm(diff, axis=-1, keepdims=True)
        unit = diff / np.maximum(norm, 1e-12)
        return np.einsum("abk,ack->abc", unit, unit)

    return np_huber(angles(s) - angles(t)).mean(axis=(1, 2))


def np_pkt(t, s, eps=1e-7):
    def cond(x):
        x = np_flat(x)
        x = x / (np.linalg.norm(x, axis=1, keepdims=True) + eps)
        sim = (x @ x.T + 1) / 2
        return sim / sim.sum(1, keepdims=True)

    pt, ps = cond(t), cond(s)
    return np.mean(pt * np.log((pt + eps) / (ps + eps)), axis=1)


def np_sp(t, s):
    def gram(x):
        x = np_flat(x)
        g = x @ x.T
        return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)

    d = gram(t) - gram(s)
    return (d**2).sum(1) / len(d)


# ------------------------------------------------------------- values


@pytest.mark.parametrize("mode", MODES)
def test_hint_loss_matches_numpy(mode):
    t = rng(1).normal(size=(4, 3, 3, 5)).astype("float32")
    s = rng(2).normal(size=(4, 3, 3, 5)).astype("float32")
    got = run(losses.hint_loss, mode, t, s)
    np.testing.assert_allclose(got, ((s - t) ** 2).reshape(4, -1).mean(1), rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "t_shape,s_shape",
    [((3, 4, 4, 6), (3, 4, 4, 2)), ((3, 8, 8, 6), (3, 4, 4, 2)), ((3, 2, 2, 6), (3, 4, 4, 2))],
    ids=["same-size", "teacher-larger", "student-larger"],
)
def test_attention_transfer_matches_numpy(mode, t_shape, s_shape):
    t = rng(3).normal(size=t_shape).astype("float32")
    s = rng(4).normal(size=s_shape).astype("float32")
    got = run(losses.attention_transfer_loss, mode, t, s)
    np.testing.assert_allclose(got, np_at(t, s), rtol=1e-4, atol=1e-7)
    assert got.shape == (3,) and np.all(got > 0)


def test_attention_transfer_p_and_sequences():
    t = rng(5).normal(size=(2, 6, 4)).astype("float32")
    s = rng(6).normal(size=(2, 6, 3)).astype("float32")
    got = np.asarray(losses.attention_transfer_loss(t, s, p=3.0))
    np.testing.assert_allclose(got, np_at(t, s, p=3.0), rtol=1e-4)
    # Non-multiple sizes are resized bilinearly: finite, per sample.
    t = rng(7).normal(size=(2, 5, 5, 3)).astype("float32")
    s = rng(8).normal(size=(2, 3, 3, 3)).astype("float32")
    got = np.asarray(losses.attention_transfer_loss(t, s))
    assert got.shape == (2,) and np.all(np.isfinite(got))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "fn,ref",
    [
        (losses.rkd_distance_loss, np_rkd_distance),
        (losses.rkd_angle_loss, np_rkd_angle),
        (losses.pkt_loss, np_pkt),
        (losses.similarity_preserving_loss, np_sp),
    ],
    ids=["rkd-distance", "rkd-angle", "pkt", "sp"],
)
def test_relational_losses_match_numpy(mode, fn, ref):
    # Different feature sizes and ranks: relational terms need no adapter.
    t = np.abs(rng(9).normal(size=(6, 4, 4, 3))).astype("float32")
    s = rng(10).normal(size=(6, 5)).astype("float32")
    got = run(fn, mode, t, s)
    want = ref(t, s)
    assert got.shape == (6,)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)
    assert np.mean(want) > 0
    # Identical relations give zero.
    np.testing.assert_allclose(run(fn, mode, s, s), 0.0, atol=1e-5)


def test_relational_losses_are_scale_invariant_where_the_paper_is():
    t = rng(11).normal(size=(5, 4)).astype("float32")
    s = rng(12).normal(size=(5, 7)).astype("float32")
    for fn in (
        losses.rkd_distance_loss,
        losses.rkd_angle_loss,
        losses.pkt_loss,
        losses.similarity_preserving_loss,
    ):
        np.testing.assert_allclose(
            np.asarray(fn(t, s)), np.asarray(fn(t, 10.0 * s)), rtol=1e-3, atol=1e-6
        )


def test_rkd_angle_duplicates_stay_finite_with_finite_gradients():
    t = rng(13).normal(size=(5, 4)).astype("float32")
    t[3] = t[1]
    s0 = rng(14).normal(size=(5, 3)).astype("float32")
    s0[0] = s0[2] = 0.0  # dead ReLU embeddings: exact duplicates
    s = tf.Variable(s0)
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(losses.rkd_angle_loss(t, s) + losses.rkd_distance_loss(t, s))
    grad = tape.gradient(value, s).numpy()
    assert np.isfinite(value.numpy())
    np.testing.assert_allclose(
        np.mean(np_rkd_angle(t, s0) + np_rkd_distance(t, s0)), value.numpy(), rtol=1e-4
    )
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)
    assert np.max(np.abs(grad)) < 1e3


@pytest.mark.parametrize(
    "fn",
    [
        losses.hint_loss,
        losses.attention_transfer_loss,
        losses.rkd_distance_loss,
        losses.rkd_angle_loss,
        losses.pkt_loss,
        losses.similarity_preserving_loss,
    ],
    ids=["hint", "at", "rkd-distance", "rkd-angle", "pkt", "sp"],
)
def test_zero_student_features_give_finite_gradients(fn):
    # All-zero samples (dead ReLUs) must not poison training with NaN.
    t = np.abs(rng(25).normal(size=(4, 2, 2, 3))).astype("float32")
    s0 = rng(26).normal(size=(4, 2, 2, 3)).astype("float32")
    s0[1] = 0.0
    s0[3] = 0.0
    s = tf.Variable(s0)
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(fn(t, s))
    grad = tape.gradient(value, s).numpy()
    assert np.isfinite(value.numpy()) and np.all(np.isfinite(grad))
    assert np.max(np.abs(grad)) < 1e3 and np.any(grad != 0)


def test_float16_features_are_cast_to_float32():
    t = rng(15).normal(size=(4, 4, 4, 3)).astype("float16")
    s = rng(16).normal(size=(4, 2, 2, 5)).astype("float16")
    for fn in (
        losses.attention_transfer_loss,
        losses.rkd_distance_loss,
        losses.rkd_angle_loss,
        losses.pkt_loss,
        losses.similarity_preserving_loss,
    ):
        out = fn(t, s)
        assert out.dtype == "float32"
        assert np.all(np.isfinite(np.asarray(out)))


# ------------------------------------------------------------- classes


def test_classes_wrap_the_functions():
    t = rng(17).normal(size=(4, 4, 4, 3)).astype("float32")
    s = rng(18).normal(size=(4, 2, 2, 5)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(kdkeras.AttentionTransfer("a", "b").call(t, s)), np_at(t, s), rtol=1e-4
    )
    rkd = kdkeras.RKD(distance_weight=2.0, angle_weight=3.0).call(t, s)
    np.testing.assert_allclose(
        np.asarray(rkd), 2 * np_rkd_distance(t, s) + 3 * np_rkd_angle(t, s), rtol=1e-4
    )
    np.testing.assert_allclose(np.asarray(kdkeras.PKT().call(t, s)), np_pkt(t, s), rtol=1e-4)
    np.testing.assert_allclose(
        np.asarray(kdkeras.SimilarityPreserving().call(t, s)), np_sp(t, s), rtol=1e-4
    )


def test_relational_sample_weights_weight_rows():
    t = rng(19).normal(size=(4, 6)).astype("float32")
    s = rng(20).normal(size=(4, 3)).astype("float32")
    w = np.array([1.0, 0.0, 2.0, 1.0], "float32")
    got = float(kdkeras.SimilarityPreserving().compute_loss(t, s, sample_weight=w))
    np.testing.assert_allclose(got, np.sum(np_sp(t, s) * w) / 4, rtol=1e-5)


@pytest.mark.parametrize("loss", ["mse", "mae", "cosine_similarity"])
def test_feature_distillation_equals_keras_feature_distillation(loss):
    t = rng(21).normal(size=(4, 3, 3, 5)).astype("float32")
    s = rng(22).normal(size=(4, 3, 3, 5)).astype("float32")
    ours = float(kdkeras.FeatureDistillation(loss=loss).compute_loss(t, s))
    theirs = float(keras.distillation.FeatureDistillation(loss=loss).compute_loss(t, s))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_feature_distillation_structured_losses():
    t = [rng(23).normal(size=(2, 3)).astype("float32"), np.zeros((2, 4), "float32")]
    s = [rng(24).normal(size=(2, 3)).astype("float32"), np.ones((2, 4), "float32")]
    term = kdkeras.FeatureDistillation(loss=["mse", None])
    np.testing.assert_allclose(np.asarray(term.call(t, s)), ((s[0] - t[0]) ** 2).mean(1), rtol=1e-5)
    with pytest.raises(ValueError, match="not None"):
        kdkeras.FeatureDistillation(loss=[None, None])


@pytest.mark.parametrize(
    "term",
    [
        kdkeras.FeatureDistillation(
            loss="mae", teacher_layer_name="t", student_layer_name="s", adapter=None, name="hint"
        ),
        kdkeras.FeatureDistillation(
            loss=keras.losses.MeanSquaredError(), adapter=keras.layers.Dense(3, name="proj")
        ),
        kdkeras.AttentionTransfer("t", "s", p=3.0),
        kdkeras.RKD("t", "s", distance_weight=1.0, angle_weight=2.0),
        kdkeras.PKT("t", "s", adapter=keras.layers.Dense(4)),
        kdkeras.SimilarityPreserving("t", "s", name="sp"),
    ],
    ids=["fitnets", "fitnets-layer", "at", "rkd", "pkt", "sp"],
)
def test_get_config_round_trip(term):
    config = term.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(term))
    assert type(restored) is type(term)
    restored_config = restored.get_config()
    assert restored_config == config
    if isinstance(term.adapter, keras.layers.Layer):
        assert isinstance(restored.adapter, type(term.adapter))
        assert restored.adapter is not term.adapter


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError, match="adapter"):
        kdkeras.FeatureDistillation(adapter="conv")
    with pytest.raises(ValueError, match="None or a keras.layers.Layer"):
        kdkeras.RKD(adapter="auto")
    with pytest.raises(ValueError, match="Received: p=0"):
        kdkeras.AttentionTransfer(p=0)
    with pytest.raises(ValueError, match="angle_weight"):
        kdkeras.RKD(angle_weight=-1.0)
