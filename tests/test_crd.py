"""CRD: the loss against a NumPy transcription of RepDistiller, the memory bank, indices."""

import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdkeras
from kdkeras import losses
from kdkeras.distill import INDICES_KEY
from kdkeras.distill import INPUTS_KEY
from kdkeras.distill import with_indices

RNG = np.random.default_rng(0)
X = RNG.normal(size=(8, 6)).astype("float32")
Y = RNG.integers(0, 3, size=(8,)).astype("int64")


def np_unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def np_crd(e_t, e_s, bank_t, bank_s, idx, n, temperature, normalizers=None):
    """RepDistiller's ContrastMemory.forward and ContrastLoss, in NumPy."""

    def scores(anchor, bank):  # out_v1 / out_v2 before the division by Z
        return np.exp(np.einsum("bkd,bd->bk", bank[idx], anchor) / temperature)

    out_s, out_t = scores(e_s, bank_t), scores(e_t, bank_s)
    if normalizers is None:  # Z set from the first batch
        normalizers = (out_s.mean() * n, out_t.mean() * n)

    def contrast_loss(x):  # per sample; RepDistiller returns the batch mean
        m, pn = x.shape[1] - 1, 1.0 / n
        pos, neg = x[:, 0], x[:, 1:]
        log_d1 = np.log(pos / (pos + m * pn + 1e-7))
        log_d0 = np.log((m * pn) / (neg + m * pn + 1e-7))
        return -(log_d1 + log_d0.sum(1))

    return contrast_loss(out_s / normalizers[0]) + contrast_loss(out_t / normalizers[1])


def np_momentum(bank, idx, emb, m):
    bank = bank.copy()
    bank[idx] = np_unit(m * bank[idx] + (1 - m) * emb)
    return bank


# A small bank: 10 samples, 4 dimensions, a batch of 3 with 5 negatives each.
N, DIM, K = 10, 4, 5
E_T = np_unit(RNG.normal(size=(3, DIM)))
E_S = np_unit(RNG.normal(size=(3, DIM)))
BANK_T = RNG.uniform(-0.8, 0.8, size=(N, DIM))
BANK_S = RNG.uniform(-0.8, 0.8, size=(N, DIM))
BATCH_IDX = np.array([4, 0, 7])
CONTRAST = np.concatenate([BATCH_IDX[:, None], RNG.integers(0, N, size=(3, K))], axis=1)


def f32(*arrays):
    return [a.astype("float32") for a in arrays]


@pytest.mark.parametrize("normalizers", [None, (3.0, 40.0)])
def test_crd_loss_matches_numpy_with_fixed_negatives(normalizers):
    got = losses.crd_loss(
        *f32(E_T, E_S, BANK_T, BANK_S),
        CONTRAST,
        num_samples=N,
        temperature=0.07,
        normalizers=normalizers,
    )
    want = np_crd(E_T, E_S, BANK_T, BANK_S, CONTRAST, N, 0.07, normalizers)
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_nce_loss_and_momentum_update_match_numpy():
    p = RNG.uniform(0.01, 2.0, size=(3, 1 + K))
    m, pn = K, 1.0 / N
    want = -(np.log(p[:, 0] / (p[:, 0] + m * pn + 1e-7)))
    want -= np.log((m * pn) / (p[:, 1:] + m * pn + 1e-7)).sum(1)
    np.testing.assert_allclose(losses.nce_loss(p.astype("float32"), N), want, rtol=1e-5)
    got = losses.contrastive.momentum_update(*f32(BANK_T), BATCH_IDX, *f32(E_T), 0.5)
    np.testing.assert_allclose(got, np_momentum(BANK_T, BATCH_IDX, E_T, 0.5), atol=1e-6)


def test_crd_functions_compile_with_xla():
    args = [tf.constant(a) for a in f32(E_T, E_S, BANK_T, BANK_S)] + [tf.constant(CONTRAST)]

    def fn(e_t, e_s, b_t, b_s, c):
        value = losses.crd_loss(e_t, e_s, b_t, b_s, c, num_samples=N)
        return value, losses.contrastive.momentum_update(b_t, c[:, 0], e_t, 0.5)

    eager = fn(*args)
    compiled = tf.function(fn, jit_compile=True)(*args)
    for a, b in zip(eager, compiled):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def np_head(head, features):
    dense = head.layers[1]
    z = features.reshape(len(features), -1) @ dense.kernel.numpy() + dense.bias.numpy()
    return np_unit(z)


def test_crd_term_matches_numpy_and_updates_its_banks_in_the_call():
    term = kdkeras.CRD(num_samples=N, feat_dim=DIM, nce_k=K, nce_t=0.1, nce_m=0.3, seed=5)
    term.build((None, 6), (None, 2, 3))
    f_t = RNG.normal(size=(3, 6)).astype("float32")
    f_s = RNG.normal(size=(3, 2, 3)).astype("float32")
    e_t, e_s = np_head(term.teacher_head, f_t), np_head(term.student_head, f_s)
    bank_t, bank_s = term.memory.teacher_bank.numpy(), term.memory.student_bank.numpy()
    # The negatives come from the term's seeded generator: the same draw.
    negatives = keras.random.randint(
        (3, K), 0, N, dtype="int32", seed=keras.random.SeedGenerator(5)
    )
    contrast = np.concatenate([BATCH_IDX[:, None], np.asarray(negatives)], axis=1)
    got = term.call(f_t, f_s, indices=BATCH_IDX, training=True)
    np.testing.assert_allclose(
        got, np_crd(e_t, e_s, bank_t, bank_s, contrast, N, 0.1), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(
        term.memory.teacher_bank.numpy(), np_momentum(bank_t, BATCH_IDX, e_t, 0.3), atol=1e-6
    )
    np.testing.assert_allclose(
        term.memory.student_bank.numpy(), np_momentum(bank_s, BATCH_IDX, e_s, 0.3), atol=1e-6
    )
    out = lambda e, b: np.exp(np.einsum("bkd,bd->bk", b[contrast], e) / 0.1)
    np.testing.assert_allclose(
        term.memory.normalizers.numpy(),
        [out(e_s, bank_t).mean() * N, out(e_t, bank_s).mean() * N],
        rtol=1e-4,
    )
    # Evaluation: no value (the positives are training rows), no update.
    before = term.memory.teacher_bank.numpy()
    np.testing.assert_array_equal(term.call(f_t, f_s, indices=BATCH_IDX), np.zeros(3))
    np.testing.assert_array_equal(term.memory.teacher_bank.numpy(), before)
    with pytest.raises(ValueError, match="Received: indices=None"):
        term.call(f_t, f_s, training=True)


def mlp(width, name, seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(width, activation="relu", name="hidden"),
            keras.layers.Dense(3, name="logits"),
        ],
        name=name,
    )


def distiller_with_crd(num_samples=10, nce_m=0.5, lr=0.0, **kwargs):
    crd = kdkeras.CRD(
        "hidden", "hidden", num_samples=num_samples, feat_dim=5, nce_k=7, nce_m=nce_m, seed=3
    )
    distiller = kdkeras.Distiller(
        mlp(8, "teacher", 1), mlp(4, "student", 2), [kdkeras.LogitsDistillation(2.0), crd], **kwargs
    )
    distiller.compile(
        optimizer=keras.optimizers.SGD(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return distiller, crd


def embeddings(distiller, crd):
    t_hidden = keras.Model(
        distiller.teacher.inputs[0], distiller.teacher.get_layer("hidden").output
    )
    s_hidden = keras.Model(
        distiller.student.inputs[0], distiller.student.get_layer("hidden").output
    )
    return (
        np_head(crd.teacher_head, t_hidden(X).numpy()),
        np_head(crd.student_head, s_hidden(X).numpy()),
    )


def test_banks_update_exactly_once_per_training_step():
    # lr = 0: the embeddings stay fixed, so after two epochs of two steps
    # each row of the 8 samples has moved exactly twice; rows 8 and 9 (no
    # sample) never.
    distiller, crd = distiller_with_crd(num_samples=10, nce_m=0.5)
    bank_t, bank_s = crd.memory.teacher_bank.numpy(), crd.memory.student_bank.numpy()
    distiller.fit(X, Y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    z_first = crd.memory.normalizers.numpy()
    assert np.all(z_first > 0)
    distiller.fit(X, Y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_array_equal(crd.memory.normalizers.numpy(), z_first)  # set once
    e_t, e_s = embeddings(distiller, crd)
    idx = np.arange(8)
    for bank, emb, var in (
        (bank_t, e_t, crd.memory.teacher_bank),
        (bank_s, e_s, crd.memory.student_bank),
    ):
        want = np_momentum(np_momentum(bank, idx, emb, 0.5), idx, emb, 0.5)
        np.testing.assert_allclose(var.numpy(), want, atol=1e-5)
        np.testing.assert_array_equal(var.numpy()[8:], bank[8:])
    # evaluate() leaves the banks alone and logs 0 for CRD.
    before = crd.memory.teacher_bank.numpy()
    logs = distiller.evaluate(X, Y, return_dict=True, verbose=0)
    assert logs["crd_loss"] == 0.0
    np.testing.assert_array_equal(crd.memory.teacher_bank.numpy(), before)


@pytest.mark.parametrize("data", ["arrays", "dataset"])
def test_indices_follow_their_samples_when_fit_shuffles(data):
    # Momentum 0: a row becomes the embedding of the sample at its index, so
    # any misaligned index after shuffling shows.
    distiller, crd = distiller_with_crd(num_samples=8, nce_m=0.0)
    keras.utils.set_random_seed(11)
    if data == "arrays":
        distiller.fit(X, Y, batch_size=3, epochs=1, shuffle=True, verbose=0)
    else:
        ds = with_indices(tf.data.Dataset.from_tensor_slices((X, Y)))
        distiller.fit(ds.shuffle(8, seed=1).batch(3), epochs=1, verbose=0)
    e_t, e_s = embeddings(distiller, crd)
    np.testing.assert_allclose(crd.memory.teacher_bank.numpy(), e_t, atol=1e-5)
    np.testing.assert_allclose(crd.memory.student_bank.numpy(), e_s, atol=1e-5)


def test_cached_teacher_outputs_and_datasets_with_indices_train_the_same():
    def run(kind):
        distiller, crd = distiller_with_crd(num_samples=8, lr=0.1)
        if kind == "arrays":
            data = (X, Y)
        elif kind == "cached":
            data = (distiller.cache_teacher_outputs(X), Y)
        else:
            ds = with_indices(tf.data.Dataset.from_tensor_slices((X, Y))).batch(4)
            data = (ds,)
        kwargs = {} if kind == "dataset" else dict(batch_size=4, shuffle=False)
        distiller.fit(*data, epochs=2, verbose=0, **kwargs)
        return [v.numpy() for v in distiller.trainable_variables] + [
            crd.memory.teacher_bank.numpy()
        ]

    arrays = run("arrays")
    for kind in ("cached", "dataset"):
        for a, b in zip(arrays, run(kind)):
            np.testing.assert_allclose(a, b, atol=1e-5)


def test_missing_or_out_of_range_indices_fail_clearly():
    distiller, _ = distiller_with_crd(num_samples=8)
    ds = tf.data.Dataset.from_tensor_slices((X, Y)).batch(4)
    with pytest.raises(ValueError, match="with_indices.*Received: a dataset with element_spec"):
        distiller.fit(ds, epochs=1, verbose=0)

    def batches():
        while True:
            yield X[:4], Y[:4]

    with pytest.raises(ValueError, match="Received: a batch without indices"):
        distiller.fit(batches(), steps_per_epoch=1, epochs=1, verbose=0)
    small, _ = distiller_with_crd(num_samples=5)
    with pytest.raises(ValueError, match=r"indices in \[0, 5\).*num_samples=5"):
        small.fit(X, Y, epochs=1, verbose=0)
    indexed = {INPUTS_KEY: X, INDICES_KEY: np.arange(8) + 3}
    with pytest.raises(ValueError, match="Received: indices from 3 to 10"):
        distiller.fit(indexed, Y, epochs=1, verbose=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(), "Received: num_samples=None"),
        (dict(num_samples=0), "num_samples"),
        (dict(num_samples=8, nce_k=0), "Received: nce_k=0"),
        (dict(num_samples=8, feat_dim=2.5), "Received: feat_dim=2.5"),
        (dict(num_samples=8, nce_t=0.0), "Received: nce_t=0.0"),
        (dict(num_samples=8, nce_m=1.0), "Received: nce_m=1.0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kdkeras.CRD("hidden", "hidden", **kwargs)


def test_crd_needs_the_kdkeras_distiller():
    with pytest.raises(ValueError, match="inside a kdkeras.Distiller"):
        kdkeras.CRD(num_samples=4).compute_loss(E_T, E_S)


def test_student_saves_without_heads_and_the_distiller_keeps_its_banks(tmp_path):
    distiller, crd = distiller_with_crd(num_samples=8, lr=0.1)
    distiller.fit(X, Y, batch_size=4, epochs=1, verbose=0)
    assert {v.path for v in distiller.trainable_variables} > {
        v.path for v in distiller.student.trainable_variables
    }
    distiller.student.save(tmp_path / "student.keras")
    with zipfile.ZipFile(tmp_path / "student.keras") as archive:
        config = archive.read("config.json")
        assert b"crd" not in config and b"kdkeras" not in config
    assert keras.saving.load_model(tmp_path / "student.keras").count_params() == (
        distiller.student.count_params()
    )
    # The config holds the arguments (fresh banks); the saved Distiller its state.
    restored = kdkeras.Distiller.from_config(distiller.get_config())
    assert restored.get_config() == distiller.get_config()
    assert restored.distillation_losses[1].memory is not crd.memory
    distiller.save(tmp_path / "distiller.keras")
    loaded = keras.saving.load_model(tmp_path / "distiller.keras")
    memory = loaded.distillation_losses[1].memory
    for name in ("teacher_bank", "student_bank", "normalizers", "sampler_state"):
        np.testing.assert_array_equal(
            getattr(memory, name).numpy(), getattr(crd.memory, name).numpy()
        )
    np.testing.assert_array_equal(
        loaded.distillation_losses[1].student_head.layers[1].kernel.numpy(),
        crd.student_head.layers[1].kernel.numpy(),
    )


def test_crd_trains_under_xla_and_mixed_precision():
    keras.config.set_dtype_policy("mixed_float16")
    distiller, crd = distiller_with_crd(num_samples=8, lr=0.1)
    distiller.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    history = distiller.fit(X, Y, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["crd_loss"]))
    assert history.history["crd_loss"][0] > 0
    assert crd.memory.teacher_bank.dtype == "float32"


def test_a_run_resumed_from_saved_weights_draws_the_same_negatives(tmp_path):
    # The sampler's state is a weight: one epoch, save, reload into a fresh
    # Distiller, one more epoch equals two epochs in a row.
    straight, crd = distiller_with_crd(num_samples=8, lr=0.1)
    straight.fit(X, Y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    first, _ = distiller_with_crd(num_samples=8, lr=0.1)
    first.fit(X, Y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    first.save_weights(tmp_path / "epoch1.weights.h5")
    resumed, resumed_crd = distiller_with_crd(num_samples=8, lr=0.1)
    resumed.load_weights(tmp_path / "epoch1.weights.h5")
    resumed.fit(X, Y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(straight.trainable_variables, resumed.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    for name in ("teacher_bank", "student_bank", "sampler_state"):
        np.testing.assert_allclose(
            getattr(crd.memory, name).numpy(), getattr(resumed_crd.memory, name).numpy(), atol=1e-6
        )
