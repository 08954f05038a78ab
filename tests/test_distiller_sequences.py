"""The Distiller on sequences: token terms, padding masks, unlabeled weights, replicas, top-k."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdkeras
from kdkeras import losses
from kdkeras.distill import teacher_cache
from kdkeras.utils import keras_compat

VOCAB, STEPS = 7, 6
# Real lengths: the first half of the batch holds 23 real tokens, the second
# half 7, so a mean of per-replica (or per-sequence) means is far from the
# token mean.
LENGTHS = np.array([6, 6, 5, 6, 2, 1, 3, 1])
MASK = (np.arange(STEPS)[None, :] < LENGTHS[:, None]).astype("float32")
RNG = np.random.default_rng(0)
X = np.where(MASK > 0, RNG.integers(1, VOCAB, (8, STEPS)), 0).astype("int32")
Y = RNG.integers(1, VOCAB, (8, STEPS)).astype("int32")


def lm(width, seed, vocab=VOCAB, mask_zero=False):
    """A per-token language model: embedding, one hidden layer, logits."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((STEPS,), dtype="int32")
    h = keras.layers.Embedding(VOCAB, width, mask_zero=mask_zero)(inputs)
    h = keras.layers.Dense(width, activation="tanh")(h)
    return keras.Model(inputs, keras.layers.Dense(vocab)(h))


def make(term=None, student_loss_weight=0.0, teacher_vocab=VOCAB, mask_zero=False, **kwargs):
    term = term if term is not None else kdkeras.TokenDistillation()
    return kdkeras.Distiller(
        lm(8, 1, vocab=teacher_vocab),
        lm(4, 2, mask_zero=mask_zero),
        term,
        student_loss_weight=student_loss_weight,
        **kwargs,
    )


def sce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def token_mean(values, mask):
    values = np.asarray(values, "float64")
    return float((values * mask).sum() / mask.sum())


def test_unlabeled_sample_weights_reach_the_terms_in_fit_and_evaluate():
    # Keras drops sample_weight when y is None: before the fix,
    # evaluate(X, sample_weight=MASK) returned the unmasked value.
    for term in (kdkeras.LogitsDistillation(2.0), kdkeras.TokenDistillation()):
        distiller = make(term)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5))
        t, s = distiller.teacher(X), distiller.student(X)
        if isinstance(term, kdkeras.TokenDistillation):
            want = token_mean(losses.token_kl_loss(t, s), MASK)
            unmasked = token_mean(losses.token_kl_loss(t, s), np.ones_like(MASK))
        else:  # sum_over_batch_size: padded positions weigh 0, the count stays
            want = float(np.sum(np.asarray(losses.kd_loss(t, s, 2.0)) * MASK)) / MASK.size
            unmasked = float(np.mean(losses.kd_loss(t, s, 2.0)))
        kwargs = {"batch_size": 8, "verbose": 0, "return_dict": True}
        assert distiller.evaluate(X, sample_weight=MASK, **kwargs)["loss"] == pytest.approx(
            want, rel=1e-5
        )
        assert abs(want - unmasked) > 0.05 * want

    # fit(X, sample_weight=MASK) trains like train_on_batch(X, sample_weight=MASK)
    # (which Keras never dropped), and validation_data=(X, None, MASK) is masked too.
    weights = []
    for use_fit in (True, False):
        distiller = make(kdkeras.GeneralizedJSD(beta=0.3))
        distiller.compile(optimizer=keras.optimizers.SGD(0.5))
        if use_fit:
            history = distiller.fit(
                X,
                sample_weight=MASK,
                batch_size=8,
                epochs=1,
                shuffle=False,
                validation_data=(X, None, MASK),
                verbose=0,
            )
            after = distiller.evaluate(X, sample_weight=MASK, batch_size=8, verbose=0)
            assert history.history["val_loss"][0] == pytest.approx(after[0], rel=1e-6)
        else:
            distiller.train_on_batch(X, sample_weight=MASK)
        weights.append([w.numpy() for w in distiller.student.trainable_variables])
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, atol=1e-7)


def test_unlabeled_weights_are_shuffled_with_their_samples():
    distiller = make()
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))  # no update: losses comparable
    masked = distiller.evaluate(X, sample_weight=MASK, batch_size=8, verbose=0)[0]
    # With shuffling, a weight left behind would mask the wrong sequences.
    history = distiller.fit(X, sample_weight=MASK, batch_size=8, epochs=3, shuffle=True, verbose=0)
    assert history.history["loss"] == pytest.approx([masked] * 3, rel=1e-5)
    with pytest.raises(ValueError, match="Expected sample weights once"):
        distiller.train_on_batch(teacher_cache.pack_sample_weight(X, MASK), sample_weight=MASK)
    # A dataset carries its weights in its elements; Keras refuses both.
    dataset = tf.data.Dataset.from_tensor_slices((X, MASK)).map(lambda x, w: (x, None, w))
    assert distiller.evaluate(dataset.batch(8), verbose=0)[0] == pytest.approx(masked, rel=1e-5)
    with pytest.raises(ValueError, match="sample_weight"):
        distiller.fit(tf.data.Dataset.from_tensor_slices(X).batch(8), sample_weight=MASK)


def test_keras_mask_of_the_student_output_masks_the_terms():
    masked_model = make(mask_zero=True)
    plain = make()
    masked_model.compile(optimizer="sgd")
    plain.compile(optimizer="sgd")
    mask = keras_compat.keras_mask(masked_model.student(X))
    np.testing.assert_array_equal(np.asarray(mask), MASK > 0)
    kwargs = {"batch_size": 8, "verbose": 0, "return_dict": True}
    got = masked_model.evaluate(X, **kwargs)
    want = plain.evaluate(X, sample_weight=MASK, **kwargs)
    for key in ("loss", "token_distillation_loss", "teacher_agreement"):
        assert got[key] == pytest.approx(want[key], rel=1e-6), key
    # teacher_agreement is the share of real tokens that agree.
    t, s = plain.teacher(X), plain.student(X)
    agree = (np.argmax(t, -1) == np.argmax(s, -1)).astype("float32")
    assert got["teacher_agreement"] == pytest.approx(token_mean(agree, MASK), rel=1e-6)


def test_padded_positions_change_neither_the_losses_nor_the_trained_weights():
    noise = np.random.default_rng(5)
    x_other = np.where(MASK > 0, X, noise.integers(0, VOCAB, X.shape)).astype("int32")
    y_other = np.where(MASK > 0, Y, noise.integers(0, VOCAB, Y.shape)).astype("int32")
    runs = []
    for x, y in ((X, Y), (x_other, y_other)):
        distiller = make(kdkeras.SkewKL(alpha=0.1, reverse=True), student_loss_weight=0.5)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5), loss=sce())
        history = distiller.fit(
            x, y, sample_weight=MASK, batch_size=4, epochs=2, shuffle=False, verbose=0
        )
        runs.append((history.history, [w.numpy() for w in distiller.student.trainable_variables]))
    (logs_a, weights_a), (logs_b, weights_b) = runs
    assert logs_a == logs_b
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_one_step_equals_the_token_mean_by_hand(jit_compile):
    alpha, lr = 0.3, 0.5
    distiller = make(kdkeras.TokenDistillation(loss="reverse_kl_divergence"), alpha)
    distiller.compile(optimizer=keras.optimizers.SGD(lr), loss=sce(), jit_compile=jit_compile)
    student = distiller.student
    t = distiller.teacher(X, training=False)
    with tf.GradientTape() as tape:
        s = student(X, training=True)
        ce = tf.reduce_sum(sce().call(Y, s) * MASK) / MASK.size  # Keras: sum_over_batch_size
        kl = tf.reduce_sum(losses.token_kl_loss(t, s, reverse=True) * MASK) / MASK.sum()
        want = alpha * ce + (1 - alpha) * kl
    grads = [tf.convert_to_tensor(g) for g in tape.gradient(want, student.trainable_variables)]
    expected = [w.numpy() - lr * g.numpy() for w, g in zip(student.trainable_variables, grads)]
    logs = distiller.train_on_batch(X, Y, sample_weight=MASK, return_dict=True)
    assert logs["loss"] == pytest.approx(float(want), rel=1e-5)
    for w, e in zip(student.trainable_variables, expected):
        np.testing.assert_allclose(w.numpy(), e, atol=1e-6)


def test_mirrored_strategy_divides_by_the_token_count_of_the_global_batch(mirrored_strategy):
    logs = {}

    def run(strategy):
        with strategy.scope():
            distiller = make(
                [kdkeras.TokenDistillation(), kdkeras.GeneralizedJSD(beta=0.5)],
                student_loss_weight=0.3,
            )
            distiller.compile(optimizer=keras.optimizers.SGD(0.5), loss=sce())
        before = distiller.evaluate(X, Y, sample_weight=MASK, batch_size=8, verbose=0)
        history = distiller.fit(
            X,
            Y,
            sample_weight=MASK,
            batch_size=8,
            epochs=1,
            shuffle=False,
            validation_data=(X, Y, MASK),
            verbose=0,
        )
        logs[strategy] = {"before": before, **{k: v[0] for k, v in history.history.items()}}
        return distiller, [w.numpy() for w in distiller.student.trainable_variables]

    single_strategy = tf.distribute.get_strategy()
    single, single_weights = run(single_strategy)
    _, mirrored_weights = run(mirrored_strategy)
    for a, b in zip(single_weights, mirrored_weights):
        np.testing.assert_allclose(a, b, atol=1e-6)
    want, got = logs[single_strategy], logs[mirrored_strategy]
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-4), key

    # The replicas hold 23 and 7 real tokens: the mean of their means
    # differs from the token mean, which is what both runs logged.
    fresh = make()
    fresh.compile(optimizer="sgd")
    t, s = fresh.teacher(X), fresh.student(X)
    kl = np.asarray(losses.token_kl_loss(t, s), "float64")
    token = token_mean(kl, MASK)
    halves = [token_mean(kl[i : i + 4], MASK[i : i + 4]) for i in (0, 4)]
    assert abs(np.mean(halves) - token) > 0.1 * token
    evaluated = fresh.evaluate(X, sample_weight=MASK, batch_size=8, verbose=0)[0]
    assert evaluated == pytest.approx(token, rel=1e-5)


def test_vocabularies_differing_by_a_padded_tail():
    with pytest.raises(ValueError, match="teacher vocabulary size 9, student vocabulary size 7"):
        make(teacher_vocab=9)
    with pytest.raises(ValueError, match="same shape"):
        make(kdkeras.LogitsDistillation(), teacher_vocab=9)
    distiller = make(kdkeras.TokenDistillation(vocab_size=VOCAB), teacher_vocab=9)
    distiller.compile(optimizer="sgd")
    t, s = distiller.teacher(X), distiller.student(X)
    want = token_mean(losses.token_kl_loss(np.asarray(t)[..., :VOCAB], s), MASK)
    got = distiller.evaluate(X, sample_weight=MASK, batch_size=8, verbose=0)[0]
    assert got == pytest.approx(want, rel=1e-5)


def test_top_k_cache_stores_ids_and_log_probs_and_matches_online_at_full_k():
    term = kdkeras.GeneralizedJSD(beta=0.5, vocab_size=VOCAB)
    distiller = make(term, teacher_vocab=9)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    online = distiller.evaluate(X, sample_weight=MASK, batch_size=8, verbose=0)[0]
    full_cache = make(kdkeras.GeneralizedJSD(beta=0.5)).cache_teacher_outputs(X)
    full_bytes = sum(a.nbytes for a in keras.tree.flatten(full_cache[teacher_cache.TARGETS_KEY]))
    values = {}
    for k in (VOCAB, 2):
        cached = distiller.cache_teacher_outputs(X, top_k=k)
        targets = cached[teacher_cache.TARGETS_KEY]["outputs"][0]
        assert targets[losses.TOP_K_IDS].shape == (8, STEPS, k)
        assert targets[losses.TOP_K_IDS].max() < VOCAB  # cut to vocab_size first
        assert sum(a.nbytes for a in targets.values()) == 8 * STEPS * k * 8
        values[k] = distiller.evaluate(cached, sample_weight=MASK, batch_size=8, verbose=0)[0]
        # One shuffled batch: targets and weights must travel with their samples.
        history = distiller.fit(cached, sample_weight=MASK, batch_size=8, shuffle=True, verbose=0)
        assert history.history["loss"][0] == pytest.approx(values[k], rel=1e-5)
    assert full_bytes == 8 * STEPS * VOCAB * 4
    assert values[VOCAB] == pytest.approx(online, rel=1e-4)
    assert values[2] < online  # the top-2 plus the rest bucket: a lower bound


@pytest.mark.parametrize(
    "terms,kwargs,match",
    [
        (
            kdkeras.LogitsDistillation(),
            {},
            "Received: distillation_losses\\[0\\]=LogitsDistillation",
        ),
        (kdkeras.TokenDistillation(temperature=2.0), {}, "with temperature=2.0"),
        (kdkeras.TokenDistillation(), {"top_k": 0}, "Received: top_k=0"),
        (
            [kdkeras.TokenDistillation(vocab_size=5), kdkeras.SkewKL()],
            {},
            "vocab_size values \\[5, None\\]",
        ),
    ],
)
def test_top_k_cache_refusals(terms, kwargs, match):
    distiller = make(terms)
    with pytest.raises(ValueError, match=match):
        distiller.cache_teacher_outputs(X, **{"top_k": 3, **kwargs})


def test_top_k_cache_refuses_several_teachers():
    distiller = kdkeras.Distiller([lm(8, 1), lm(8, 3)], lm(4, 2), kdkeras.TokenDistillation())
    with pytest.raises(ValueError, match="Received: 2 teachers and top_k=3"):
        distiller.cache_teacher_outputs(X, top_k=3)


def test_token_terms_train_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_float16")
    distiller = make([kdkeras.TokenDistillation(), kdkeras.SkewKL()], student_loss_weight=0.5)
    distiller.compile(optimizer="adam", loss=sce())
    history = distiller.fit(X, Y, sample_weight=MASK, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][1] < history.history["loss"][0]
