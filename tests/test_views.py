"""Consistent views (augment, mixup) and schedules that reach the compiled step."""

import keras
import numpy as np
import pytest

import kdkeras
from kdkeras.distill import views

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class Probe(keras.layers.Layer):
    """Identity that keeps the last batch it saw (in a variable) and counts its calls."""

    def __init__(self, shape, **kwargs):
        super().__init__(**kwargs)
        self.seen = self.add_weight(shape=shape, initializer="zeros", trainable=False, name="seen")
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, name="calls")

    def call(self, x):
        self.seen.assign(x)
        self.calls.assign_add(1.0)
        return x


class Shift(keras.layers.Layer):
    """A deterministic 'augmentation' (x + 1) that counts its calls."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, name="calls")

    def call(self, x, training=None):
        self.calls.assign_add(1.0)
        return x + 1.0


def _model(batch, name, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,), batch_size=batch)
    probe = Probe((batch, 4), name=f"{name}_probe")
    outputs = keras.layers.Dense(3, name=f"{name}_dense")(probe(inputs))
    return keras.Model(inputs, outputs, name=name), probe


def _data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype("float32"), rng.integers(0, 3, n)


def test_augment_runs_once_per_step_and_both_models_see_the_same_view():
    teacher, t_probe = _model(4, "teacher", 0)
    student, s_probe = _model(4, "student", 1)
    shift = Shift()
    distiller = kdkeras.Distiller(
        teacher, student, kdkeras.LogitsDistillation(2.0), augment=shift, mixup=1.0
    )
    distiller.compile("sgd", CE)
    x, y = _data()
    distiller.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    assert float(shift.calls) == 2.0  # 2 steps, one augmentation each
    t_seen, s_seen = np.asarray(t_probe.seen), np.asarray(s_probe.seen)
    np.testing.assert_array_equal(t_seen, s_seen)
    # The view is a mix of the shifted last batch: every row lies on a segment
    # between two shifted samples, and it is not the raw batch.
    shifted = x[4:] + 1.0
    assert not np.allclose(t_seen, x[4:])
    for row in t_seen:
        ok = False
        for a in shifted:
            for b in shifted:
                d = b - a
                lam = np.dot(row - a, d) / max(np.dot(d, d), 1e-12) if np.any(d) else 0.0
                ok |= np.allclose(a + lam * d, row, atol=1e-5)
        assert ok


def test_evaluate_and_predict_see_the_inputs_as_they_are():
    teacher, t_probe = _model(4, "teacher", 0)
    student, s_probe = _model(4, "student", 1)
    shift = Shift()
    distiller = kdkeras.Distiller(
        teacher, student, kdkeras.LogitsDistillation(2.0), augment=shift, mixup=0.5
    )
    distiller.compile("sgd", CE)
    x, y = _data(4)
    distiller.evaluate(x, y, batch_size=4, verbose=0)
    assert float(shift.calls) == 0.0
    np.testing.assert_allclose(np.asarray(t_probe.seen), x)
    np.testing.assert_allclose(np.asarray(s_probe.seen), x)
    distiller.predict(x, batch_size=4, verbose=0)
    assert float(shift.calls) == 0.0


def test_mix_matches_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 2, 3)).astype("float32")
    perm = np.array([2, 0, 4, 1, 3])
    out = np.asarray(views.mix(x, 0.3, perm))
    np.testing.assert_allclose(out, 0.3 * x + 0.7 * x[perm], rtol=1e-6)
    with pytest.raises(TypeError, match="integer inputs"):
        views.mix(np.array([1, 2, 3]), 0.5, np.array([2, 1, 0]))


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_mixup_ground_truth_and_weights_match_numpy(monkeypatch):
    lam, perm = 0.3, np.array([3, 2, 1, 0])
    monkeypatch.setattr(
        views.Views,
        "draw",
        lambda self, n: (keras.ops.convert_to_tensor(lam), keras.ops.convert_to_tensor(perm)),
    )
    teacher, _ = _model(4, "teacher", 0)
    student, _ = _model(4, "student", 1)
    distiller = kdkeras.Distiller(
        teacher, student, kdkeras.LogitsDistillation(2.0), student_loss_weight=0.5, mixup=1.0
    )
    distiller.compile(keras.optimizers.SGD(0.0), CE)  # weights never move
    x, y = _data(4)
    w = np.array([1.0, 0.0, 2.0, 0.5], "float32")
    logs = distiller.fit(x, y, sample_weight=w, batch_size=4, epochs=1, verbose=0).history

    mixed = lam * x + (1 - lam) * x[perm]
    s = np.asarray(student(mixed))
    t = np.asarray(teacher(mixed))
    ce = -_log_softmax(s)[np.arange(4), y]
    ce_perm = -_log_softmax(s)[np.arange(4), y[perm]]
    ground_truth = lam * np.mean(w * ce) + (1 - lam) * np.mean(w[perm] * ce_perm)
    p_t = np.exp(_log_softmax(t / 2.0))
    kd = (p_t * (_log_softmax(t / 2.0) - _log_softmax(s / 2.0))).sum(-1) * 4.0
    w_mix = lam * w + (1 - lam) * w[perm]
    term = np.mean(w_mix * kd)
    assert logs["student_loss"][0] == pytest.approx(ground_truth, rel=1e-5)
    assert logs["logits_distillation_loss"][0] == pytest.approx(term, rel=1e-5)
    assert logs["loss"][0] == pytest.approx(0.5 * ground_truth + 0.5 * term, rel=1e-5)


def test_cached_teacher_outputs_are_refused_with_views():
    teacher, _ = _model(4, "teacher", 0)
    student, _ = _model(4, "student", 1)
    x, y = _data(8)
    plain = kdkeras.Distiller(teacher, student, kdkeras.LogitsDistillation(2.0))
    cached = plain.cache_teacher_outputs(x, batch_size=4)
    distiller = kdkeras.Distiller(teacher, student, kdkeras.LogitsDistillation(2.0), mixup=1.0)
    distiller.compile("sgd", CE)
    with pytest.raises(ValueError, match="stale"):
        distiller.cache_teacher_outputs(x)
    with pytest.raises(ValueError, match="stale"):
        distiller.fit(cached, y, batch_size=4, verbose=0)
    # Validation data may stay cached: views apply to training batches only.
    distiller.fit(x, y, batch_size=4, verbose=0, validation_data=(cached, y))


def test_bad_view_arguments():
    teacher, _ = _model(4, "teacher", 0)
    student, _ = _model(4, "student", 1)
    term = kdkeras.LogitsDistillation(2.0)
    with pytest.raises(ValueError, match="mixup"):
        kdkeras.Distiller(teacher, student, term, mixup=0.0)
    with pytest.raises(ValueError, match="mixup"):
        kdkeras.Distiller(teacher, student, term, mixup=True)
    with pytest.raises(TypeError, match="augment"):
        kdkeras.Distiller(teacher, student, term, augment="flip")


def test_augment_that_xla_cannot_compile_is_refused_under_jit_compile():
    teacher, _ = _model(4, "teacher", 0)
    student, _ = _model(4, "student", 1)
    augment = keras.Sequential([keras.layers.RandomTranslation(0.1, 0.1)])
    distiller = kdkeras.Distiller(
        teacher, student, kdkeras.LogitsDistillation(2.0), augment=augment
    )
    with pytest.raises(ValueError, match="random_translation.*jit_compile=False"):
        distiller.compile("sgd", CE, jit_compile=True)
    distiller.compile("sgd", CE, jit_compile=False)


def test_image_augmentation_trains_and_round_trips_its_config():
    keras.utils.set_random_seed(0)
    teacher = kdkeras.models.cnn_student(input_shape=(8, 8, 1), num_classes=3, name="t")
    student = kdkeras.models.mlp_student(input_shape=(8, 8, 1), num_classes=3)
    augment = keras.Sequential(
        [keras.layers.RandomTranslation(0.1, 0.1, seed=1), keras.layers.RandomFlip(seed=2)]
    )
    distiller = kdkeras.Distiller(
        teacher, student, kdkeras.LogitsDistillation(4.0), augment=augment, mixup=1.0, seed=3
    )
    distiller.compile("adam", CE)
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype("float32")
    y = np.arange(16) % 3
    logs = distiller.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    assert np.all(np.isfinite(logs["loss"]))
    config = distiller.get_config()
    clone = kdkeras.Distiller.from_config(config)
    assert clone.mixup == 1.0 and clone.seed == 3
    assert [type(layer).__name__ for layer in clone.augment.layers] == [
        "RandomTranslation",
        "RandomFlip",
    ]


# ------------------------------------------------------------------ schedules


def _frozen_distiller(**kwargs):
    teacher, _ = _model(8, "teacher", 0)
    student, _ = _model(8, "student", 1)
    distiller = kdkeras.Distiller(teacher, student, kdkeras.LogitsDistillation(2.0), **kwargs)
    distiller.compile(keras.optimizers.SGD(0.0), CE)  # the models never change
    return distiller, teacher, student


@pytest.mark.parametrize("jit_compile", [False, True])
def test_student_loss_weight_schedule_reaches_the_compiled_step(jit_compile):
    distiller, _, _ = _frozen_distiller(student_loss_weight=0.5)
    distiller.compile(keras.optimizers.SGD(0.0), CE, jit_compile=jit_compile)
    schedule = kdkeras.callbacks.Schedule("student_loss_weight", lambda e, w: [w, 1.0, 0.0][e])
    x, y = _data(8)
    logs = distiller.fit(x, y, batch_size=8, epochs=3, callbacks=[schedule], verbose=0).history
    gt, kd = logs["student_loss"], logs["logits_distillation_loss"]
    assert logs["loss"][0] == pytest.approx(0.5 * gt[0] + 0.5 * kd[0], rel=1e-6)
    assert logs["loss"][1] == pytest.approx(gt[1], rel=1e-6)
    assert logs["loss"][2] == pytest.approx(kd[2], rel=1e-6)


def test_temperature_schedule_reaches_the_compiled_step():
    distiller, teacher, student = _frozen_distiller()
    schedule = kdkeras.callbacks.Schedule("temperatures[0]", lambda e, t: t * (e + 1))
    x, y = _data(8)
    logs = distiller.fit(x, y, batch_size=8, epochs=2, callbacks=[schedule], verbose=0).history
    for epoch, temperature in enumerate((2.0, 4.0)):
        expected = np.mean(
            np.asarray(kdkeras.losses.kd_loss(teacher(x), student(x), temperature=temperature))
        )
        assert logs["logits_distillation_loss"][epoch] == pytest.approx(expected, rel=1e-5)


def test_warmup_ramps_the_term_weights():
    distiller, _, _ = _frozen_distiller(student_loss_weight=0.0)
    x, y = _data(8)
    warmup = kdkeras.callbacks.Warmup(epochs=4)
    logs = distiller.fit(x, y, batch_size=8, epochs=5, callbacks=[warmup], verbose=0).history
    kd = logs["logits_distillation_loss"]
    ramp = [0.25, 0.5, 0.75, 1.0, 1.0]
    np.testing.assert_allclose(logs["distillation_loss"], np.multiply(ramp, kd), rtol=1e-6)
    # The constructor's values are kept for get_config.
    assert distiller.get_config()["distillation_loss_weights"] == [1.0]


def test_schedule_errors():
    with pytest.raises(ValueError, match="target"):
        kdkeras.callbacks.Schedule("learning_rate", lambda e, v: v)
    with pytest.raises(TypeError, match="schedule"):
        kdkeras.callbacks.Schedule("temperatures", 3.0)
    distiller, _, _ = _frozen_distiller()
    x, y = _data(8)
    bad = kdkeras.callbacks.Schedule("student_loss_weight", lambda e, w: 1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        distiller.fit(x, y, batch_size=8, callbacks=[bad], verbose=0)
    model, _ = _model(8, "plain", 0)
    model.compile("sgd", CE)
    with pytest.raises(ValueError, match="Distiller"):
        model.fit(x, y, callbacks=[kdkeras.callbacks.Warmup(2)], verbose=0)
