"""Distiller: single passes, frozen teacher, exact losses, scaling, serialization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdkeras
from kdkeras import losses

NUM_CLASSES = 3
RNG = np.random.default_rng(1)
X = RNG.normal(size=(16, 6)).astype("float32")
Y = RNG.integers(0, NUM_CLASSES, size=(16,)).astype("int64")
SW = RNG.uniform(0.0, 2.0, size=(16,)).astype("float32")


class CallCounter(keras.layers.Layer):
    """Identity layer counting its calls per `training` mode in variables."""

    def build(self, input_shape):
        self.train_calls = self.add_weight(shape=(), initializer="zeros", trainable=False)
        self.infer_calls = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, x, training=None):
        if training:
            self.train_calls.assign_add(1.0)
        else:
            self.infer_calls.assign_add(1.0)
        return x


def mlp(width, name, batchnorm=False, dropout=0.0, counter=False, seed=0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((6,))]
    if counter:
        layers.append(CallCounter(name="counter"))
    layers.append(keras.layers.Dense(width, activation="relu", name="hidden"))
    if batchnorm:
        layers.append(keras.layers.BatchNormalization(name="bn"))
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(NUM_CLASSES, name="logits"))
    return keras.Sequential(layers, name=name)


def make(student_loss_weight=0.5, terms=None, teacher=None, student=None, **kwargs):
    teacher = teacher or mlp(8, "teacher", batchnorm=True, dropout=0.5, seed=1)
    student = student or mlp(4, "student", seed=2)
    terms = terms if terms is not None else kdkeras.LogitsDistillation(temperature=2.0)
    return kdkeras.Distiller(
        teacher, student, terms, student_loss_weight=student_loss_weight, **kwargs
    )


def ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def np_ce(logits, y):
    z = logits - logits.max(-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -log_p[np.arange(len(y)), y]


def test_drop_in_names_and_signatures_match_keras_distillation():
    import inspect

    import keras.distillation as kd

    for name in ("Distiller", "LogitsDistillation", "FeatureDistillation"):
        ours, theirs = getattr(kdkeras, name), getattr(kd, name)
        ours_params = list(inspect.signature(ours.__init__).parameters)
        theirs_params = list(inspect.signature(theirs.__init__).parameters)
        # Every argument of keras.distillation, in the same order.
        assert [p for p in ours_params if p in theirs_params] == theirs_params, name
    assert issubclass(kdkeras.DistillationLoss, kd.DistillationLoss)


def test_teacher_frozen_weights_bit_identical_and_only_student_trains():
    distiller = make()
    teacher, student = distiller.teacher, distiller.student
    before = [w.copy() for w in teacher.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]
    distiller.compile(optimizer="adam", loss=ce())
    distiller.fit(X, Y, epochs=2, batch_size=4, verbose=0)
    assert teacher.trainable is False
    for a, b in zip(before, teacher.get_weights()):
        assert np.array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(student_before, student.get_weights()))
    assert {id(v) for v in distiller.trainable_variables} == {
        id(v) for v in student.trainable_variables
    }


@pytest.mark.parametrize("run_eagerly", [True, False])
def test_student_and_teacher_run_once_per_step_in_the_right_mode(run_eagerly):
    teacher = mlp(8, "teacher", counter=True, seed=1)
    student = mlp(4, "student", counter=True, seed=2)
    terms = [
        kdkeras.LogitsDistillation(temperature=2.0),
        kdkeras.FeatureDistillation(teacher_layer_name="logits", student_layer_name="logits"),
    ]
    distiller = make(terms=terms, teacher=teacher, student=student)
    distiller.compile(optimizer="sgd", loss=ce(), run_eagerly=run_eagerly)
    distiller.fit(X, Y, epochs=1, batch_size=4, verbose=0)  # 4 steps
    s, t = student.get_layer("counter"), teacher.get_layer("counter")
    assert float(s.train_calls) == 4 and float(s.infer_calls) == 0
    assert float(t.train_calls) == 0 and float(t.infer_calls) == 4
    distiller.evaluate(X, Y, batch_size=8, verbose=0)  # 2 steps
    assert float(s.train_calls) == 4 and float(s.infer_calls) == 2
    assert float(t.infer_calls) == 6


class TapeProbe(keras.layers.Layer):
    """Identity layer noting, per call, whether a gradient tape is recording."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.recording = []

    def call(self, x):
        from tensorflow.python.eager import record

        self.recording.append(record.could_possibly_record())
        return x


def test_teacher_runs_outside_the_gradient_tape_and_student_inside():
    # Eager steps, so that the probe sees the tape stack of each call.
    t_probe, s_probe = TapeProbe(name="probe"), TapeProbe(name="probe")
    teacher = keras.Sequential([keras.Input((6,)), t_probe, keras.layers.Dense(NUM_CLASSES)])
    student = keras.Sequential([keras.Input((6,)), s_probe, keras.layers.Dense(NUM_CLASSES)])
    distiller = make(teacher=teacher, student=student)
    distiller.compile(optimizer="sgd", loss=ce(), run_eagerly=True)
    t_probe.recording.clear()
    s_probe.recording.clear()
    distiller.fit(X, Y, epochs=1, batch_size=8, verbose=0)  # 2 steps
    assert t_probe.recording == [False, False]
    assert s_probe.recording == [True, True]


def _manual_step(distiller, x, y, sw, lr, alpha, temperature):
    """One SGD step computed by hand from the documented formula."""
    teacher, student = distiller.teacher, distiller.student
    t_logits = teacher(x, training=False)
    with tf.GradientTape() as tape:
        s_logits = student(x, training=True)
        gt = tf.reduce_sum(
            np_weights(sw, len(x))
            * tf.keras.losses.sparse_categorical_crossentropy(y, s_logits, from_logits=True)
        ) / len(x)
        kd = tf.reduce_sum(
            np_weights(sw, len(x)) * losses.kd_loss(t_logits, s_logits, temperature)
        ) / len(x)
        total = alpha * gt + (1 - alpha) * kd
    grads = tape.gradient(total, student.trainable_variables)
    return [v.numpy() - lr * g.numpy() for v, g in zip(student.trainable_variables, grads)], float(
        total
    )


def np_weights(sw, n):
    return tf.ones((n,)) if sw is None else tf.constant(sw)


@pytest.mark.parametrize("with_weights", [False, True])
@pytest.mark.parametrize("jit_compile", [False, True])
def test_one_step_equals_hand_computed_loss_and_update(with_weights, jit_compile):
    alpha, temperature, lr = 0.3, 2.0, 0.1
    distiller = make(student_loss_weight=alpha, terms=kdkeras.LogitsDistillation(temperature))
    sw = SW[:8] if with_weights else None
    want_weights, want_loss = _manual_step(distiller, X[:8], Y[:8], sw, lr, alpha, temperature)
    distiller.compile(optimizer=keras.optimizers.SGD(lr), loss=ce(), jit_compile=jit_compile)
    logs = distiller.train_on_batch(X[:8], Y[:8], sample_weight=sw, return_dict=True)
    assert logs["loss"] == pytest.approx(want_loss, rel=1e-5)
    for got, want in zip(distiller.student.trainable_variables, want_weights):
        np.testing.assert_allclose(got.numpy(), want, atol=1e-6)


def test_logs_name_each_term_and_evaluate_matches_numpy():
    alpha, temperature = 0.4, 3.0
    terms = [kdkeras.LogitsDistillation(temperature), kdkeras.DKD(temperature=temperature)]
    distiller = make(student_loss_weight=alpha, terms=terms, distillation_loss_weights=[1.0, 0.5])
    distiller.compile(optimizer="sgd", loss=ce(), metrics=["accuracy"])
    history = distiller.fit(X, Y, epochs=1, batch_size=16, verbose=0)
    assert {
        "loss",
        "student_loss",
        "logits_distillation_loss",
        "dkd_loss",
        "teacher_agreement",
        "accuracy",
    } <= set(history.history)

    result = distiller.evaluate(X, Y, sample_weight=SW, batch_size=16, return_dict=True, verbose=0)
    t = distiller.teacher(X, training=False).numpy().astype("float64")
    s = distiller.student(X, training=False).numpy().astype("float64")
    gt = (SW * np_ce(s, Y)).mean()
    kd = (SW * np.asarray(losses.kd_loss(t, s, temperature))).mean()
    dkd = (SW * np.asarray(losses.dkd_loss(t, s, Y, temperature=temperature))).mean()
    assert result["student_loss"] == pytest.approx(gt, rel=1e-5)
    assert result["logits_distillation_loss"] == pytest.approx(kd, rel=1e-5)
    assert result["dkd_loss"] == pytest.approx(dkd, rel=1e-5)
    assert result["loss"] == pytest.approx(alpha * gt + (1 - alpha) * (kd + 0.5 * dkd), rel=1e-5)
    agree = (SW * (t.argmax(-1) == s.argmax(-1))).mean()
    assert result["teacher_agreement"] == pytest.approx(agree, rel=1e-6)


def test_keras_log_names_total_loss_and_distillation_loss_by_hand():
    # keras.distillation's names: total_loss equals loss, distillation_loss is
    # sum_i(weight_i * term_i), so loss = a * student_loss + (1 - a) * it.
    alpha, temperature = 0.4, 3.0
    terms = [kdkeras.LogitsDistillation(temperature), kdkeras.DKD(temperature=temperature)]
    distiller = make(student_loss_weight=alpha, terms=terms, distillation_loss_weights=[1.0, 0.5])
    # A learning rate of 0: every batch sees the initial weights.
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), loss=ce())
    t = distiller.teacher(X, training=False).numpy().astype("float64")
    s = distiller.student(X, training=False).numpy().astype("float64")

    def by_hand(sw):
        gt = (sw * np_ce(s, Y)).mean()
        kd = (sw * np.asarray(losses.kd_loss(t, s, temperature))).mean()
        dkd = (sw * np.asarray(losses.dkd_loss(t, s, Y, temperature=temperature))).mean()
        return gt, kd + 0.5 * dkd

    history = distiller.fit(
        X, Y, validation_data=(X, Y), epochs=2, batch_size=8, shuffle=False, verbose=0
    ).history
    gt, distill = by_hand(np.ones(len(X)))
    for prefix in ("", "val_"):
        assert history[prefix + "total_loss"] == history[prefix + "loss"]
        for epoch in range(2):
            logs = {k[len(prefix) :]: v[epoch] for k, v in history.items() if k.startswith(prefix)}
            assert logs["student_loss"] == pytest.approx(gt, rel=1e-5)
            assert logs["distillation_loss"] == pytest.approx(distill, rel=1e-5)
            assert logs["distillation_loss"] == pytest.approx(
                logs["logits_distillation_loss"] + 0.5 * logs["dkd_loss"], rel=1e-5
            )
            assert logs["loss"] == pytest.approx(alpha * gt + (1 - alpha) * distill, rel=1e-5)

    result = distiller.evaluate(X, Y, sample_weight=SW, batch_size=8, return_dict=True, verbose=0)
    gt, distill = by_hand(SW)
    assert result["total_loss"] == result["loss"]
    assert result["distillation_loss"] == pytest.approx(distill, rel=1e-5)
    assert result["loss"] == pytest.approx(alpha * gt + (1 - alpha) * distill, rel=1e-5)
    # Proper metrics: reset each epoch with the others.
    names = set()
    for m in distiller.metrics:
        result = m.result()
        names |= set(result) if isinstance(result, dict) else {m.name}
    assert {"total_loss", "distillation_loss", "student_loss"} <= names

    unlabeled = distiller.evaluate(X, batch_size=8, return_dict=True, verbose=0)
    assert unlabeled["total_loss"] == unlabeled["loss"]
    assert unlabeled["distillation_loss"] == pytest.approx(
        unlabeled["logits_distillation_loss"] + 0.5 * unlabeled["dkd_loss"], rel=1e-5
    )
    assert unlabeled["loss"] == pytest.approx(
        (1 - alpha) * unlabeled["distillation_loss"], rel=1e-5
    )


def test_terms_named_like_the_distillers_own_logs_get_a_suffix():
    class Distillation(kdkeras.DistillationLoss):  # logged as distillation_loss_1
        def call(self, teacher_outputs, student_outputs, y=None):
            return keras.ops.mean(keras.ops.abs(teacher_outputs - student_outputs), axis=-1)

    terms = [Distillation(), kdkeras.LogitsDistillation(name="total_loss")]
    distiller = make(terms=terms)
    assert distiller.term_names == ["distillation_loss_1", "total_loss_1"]
    distiller.compile(optimizer="sgd", loss=ce())
    logs = distiller.evaluate(X, Y, return_dict=True, verbose=0)
    assert logs["total_loss"] == logs["loss"]
    assert logs["distillation_loss"] == pytest.approx(
        logs["distillation_loss_1"] + logs["total_loss_1"], rel=1e-5
    )


def test_evaluate_updates_no_batchnorm_statistic():
    student = mlp(4, "student", batchnorm=True, dropout=0.5, seed=2)
    distiller = make(student=student)
    distiller.compile(optimizer="sgd", loss=ce())
    before = [w.copy() for w in student.get_weights()]
    first = distiller.evaluate(X, Y, verbose=0, return_dict=True)
    second = distiller.evaluate(X, Y, verbose=0, return_dict=True)
    for a, b in zip(before, student.get_weights()):
        assert np.array_equal(a, b)
    assert first == second  # no dropout noise in evaluation


def test_unlabeled_batches_train_on_distillation_terms_alone():
    alpha, temperature = 0.5, 2.0
    distiller = make(student_loss_weight=alpha, terms=kdkeras.LogitsDistillation(temperature))
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss=ce())
    t = distiller.teacher(X[:8], training=False)
    s = distiller.student(X[:8], training=True)
    want = (1 - alpha) * float(tf.reduce_mean(losses.kd_loss(t, s, temperature)))
    logs = distiller.train_on_batch(X[:8], return_dict=True)
    assert logs["loss"] == pytest.approx(want, rel=1e-5)
    assert "student_loss" not in logs
    history = distiller.fit(X, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_sample_weight_zero_removes_samples_from_per_sample_terms():
    terms = [
        kdkeras.LogitsDistillation(2.0),
        kdkeras.FeatureDistillation(teacher_layer_name="logits", student_layer_name="logits"),
        kdkeras.DKD(),
    ]
    distiller = make(terms=terms)
    distiller.compile(optimizer="sgd", loss=ce())
    weights = np.r_[np.ones(8), np.zeros(8)].astype("float32")
    weighted = distiller.evaluate(
        X, Y, sample_weight=weights, batch_size=16, return_dict=True, verbose=0
    )
    t = distiller.teacher(X[:8], training=False)
    s = distiller.student(X[:8], training=False)
    # sum over the kept half, divided by the full batch (sum_over_batch_size)
    want = {
        "logits_distillation_loss": float(tf.reduce_sum(losses.kd_loss(t, s, 2.0))) / 16,
        "feature_distillation_loss": float(tf.reduce_sum(tf.reduce_mean((t - s) ** 2, -1))) / 16,
        "dkd_loss": float(tf.reduce_sum(losses.dkd_loss(t, s, Y[:8]))) / 16,
    }
    for name, value in want.items():
        assert weighted[name] == pytest.approx(value, rel=1e-5), name


def test_sequence_mask_on_a_term_with_one_value_per_sample_is_a_clear_error():
    values = tf.ones((2, 3))  # e.g. logits KD over (batch, steps, classes)
    mask = tf.constant([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert float(losses.reduce_per_sample(values, mask)) == pytest.approx(3 / 6)
    with pytest.raises(ValueError, match=r"Received: sample_weight.shape=\(2, 3\)"):
        losses.reduce_per_sample(tf.ones((2,)), mask)


def test_mirrored_strategy_step_and_logs_equal_single_device_ones(mirrored_strategy):
    lr = 0.5
    logs = {}

    def one_step(strategy):
        with strategy.scope():
            teacher = mlp(8, "teacher", seed=1)
            student = mlp(4, "student", seed=2)
            distiller = kdkeras.Distiller(
                teacher,
                student,
                [
                    kdkeras.LogitsDistillation(2.0),
                    kdkeras.FeatureDistillation(
                        teacher_layer_name="logits", student_layer_name="logits"
                    ),
                ],
                student_loss_weight=0.3,
            )
            distiller.compile(optimizer=keras.optimizers.SGD(lr), loss=ce())
        history = distiller.fit(
            X,
            Y,
            sample_weight=SW,
            batch_size=16,
            epochs=1,
            shuffle=False,
            validation_data=(X, Y, SW),
            verbose=0,
        )
        logs[strategy] = {k: v[0] for k, v in history.history.items()}
        return [w.numpy() for w in student.trainable_variables]

    single_strategy = tf.distribute.get_strategy()
    single = one_step(single_strategy)
    mirrored = one_step(mirrored_strategy)
    init = [w.numpy() for w in mlp(4, "student", seed=2).trainable_variables]
    assert any(np.abs(a - b).max() > 1e-3 for a, b in zip(single, init))  # it moved
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # Every log, Keras's names included, is reduced across the replicas.
    want, got = logs[single_strategy], logs[mirrored_strategy]
    assert {"total_loss", "distillation_loss", "val_total_loss", "val_distillation_loss"} <= set(
        got
    )
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-5), key
    for prefix in ("", "val_"):
        assert got[prefix + "total_loss"] == got[prefix + "loss"]
        assert got[prefix + "distillation_loss"] == pytest.approx(
            got[prefix + "logits_distillation_loss"] + got[prefix + "feature_distillation_loss"],
            rel=1e-5,
        )


def local_copies(strategy, variable):
    """Every replica's copy of `variable`, each read inside its replica."""
    read = tf.function(lambda: tf.identity(variable.value))
    return [np.asarray(c) for c in strategy.experimental_local_results(strategy.run(read))]


@pytest.mark.parametrize(
    "make_term",
    [
        lambda: kdkeras.SimilarityPreserving("hidden", "hidden"),
        lambda: kdkeras.RKD("hidden", "hidden"),
        lambda: kdkeras.PKT("hidden", "hidden"),
        lambda: kdkeras.DIST(temperature=2.0),
        lambda: kdkeras.CRD("hidden", "hidden", num_samples=16, feat_dim=5, nce_k=7, seed=3),
    ],
    ids=["SP", "RKD", "PKT", "DIST", "CRD"],
)
def test_batch_relational_and_stateful_terms_under_mirrored_strategy_equal_one_device(
    make_term, mirrored_strategy
):
    # Each replica sees half of every batch; these terms relate the samples
    # of a batch (or update state from all of them), so the Distiller gathers
    # the global batch for them. Before, SP gave 0.0581 on one device and
    # 0.0646 on 2 replicas of 4 samples.
    def run(strategy):
        with strategy.scope():
            distiller = make(
                terms=[kdkeras.LogitsDistillation(2.0), make_term()],
                teacher=mlp(8, "teacher", seed=1),
                student_loss_weight=0.3,
            )
            distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss=ce())
        history = distiller.fit(
            X, Y, sample_weight=SW, batch_size=8, epochs=2, shuffle=False, verbose=0
        )
        logs = distiller.evaluate(X, Y, batch_size=8, return_dict=True, verbose=0)
        state = {
            v.path: local_copies(strategy, v)
            for v in distiller.non_trainable_variables
            if v.path.startswith("crd")
        }
        weights = [v.numpy() for v in distiller.trainable_variables]
        return weights, {k: v[-1] for k, v in history.history.items()}, logs, state

    single = run(tf.distribute.get_strategy())
    mirrored = run(mirrored_strategy)
    init = make(teacher=mlp(8, "teacher", seed=1)).student.get_weights()
    assert any(np.abs(a - b).max() > 1e-4 for a, b in zip(single[0], init))  # it moved
    for a, b in zip(single[0], mirrored[0]):
        # DIST moves a bias to 1e5 here (a dead-ReLU student: constant
        # probability columns make the intra-class correlation steep).
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for want, got in ((single[1], mirrored[1]), (single[2], mirrored[2])):
        assert set(got) == set(want)
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), key
    # CRD's banks: the same on one device and on both replicas.
    assert set(single[3]) == set(mirrored[3])
    assert single[3] or "CRD" not in str(type(make_term()))
    for path, (one,) in single[3].items():
        first, second = mirrored[3][path]
        np.testing.assert_array_equal(first, second)
        np.testing.assert_allclose(one, first, atol=1e-5)


class Steps(keras.layers.Layer):
    """Holds a non-trainable step counter."""

    def build(self, input_shape=None):
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")


class ProjectedHint(losses.DistillationLoss):
    """The term protocol in miniature: an owned head and per-step state."""

    def build(self, teacher_shape, student_shape):
        self.shapes = (teacher_shape, student_shape)
        self.head = keras.layers.Dense(teacher_shape[-1], name="toy_head")
        self.head.build(student_shape)
        self.steps = Steps(name="toy_steps")
        self.steps.build()
        self.built = True

    @property
    def layers(self):
        return [self.head, self.steps]

    def call(self, teacher_outputs, student_outputs, y=None, training=False):
        if training:
            self.steps.count.assign_add(1.0)
        return keras.ops.mean(keras.ops.square(self.head(student_outputs) - teacher_outputs), -1)


def test_term_protocol_heads_train_state_updates_once_per_step_and_student_stays_plain(
    tmp_path,
):
    term = ProjectedHint()
    term.teacher_layer_name, term.student_layer_name = "hidden", "hidden"
    distiller = make(terms=[kdkeras.LogitsDistillation(2.0), term])
    assert term.shapes == ((None, 8), (None, 4))
    kernel = term.head.kernel
    assert any(v is kernel for v in distiller.trainable_variables)
    assert any(v is term.steps.count for v in distiller.non_trainable_variables)
    before = kernel.numpy().copy()
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss=ce())
    history = distiller.fit(X, Y, batch_size=4, epochs=2, verbose=0)  # 8 steps
    assert float(term.steps.count) == 8.0
    assert np.abs(kernel.numpy() - before).max() > 1e-4
    logs = distiller.evaluate(X, Y, batch_size=4, return_dict=True, verbose=0)
    assert float(term.steps.count) == 8.0  # evaluation passes training=False
    assert history.history["projected_hint_loss"][-1] > 0 and logs["projected_hint_loss"] > 0

    import zipfile

    distiller.student.save(tmp_path / "student.keras")
    with zipfile.ZipFile(tmp_path / "student.keras") as archive:
        assert b"toy_head" not in archive.read("config.json")
    # The Distiller's weights carry the term's layers: a fresh Distiller
    # with a fresh term restores the head and the counter.
    distiller.save_weights(tmp_path / "distiller.weights.h5")
    other_term = ProjectedHint()
    other_term.teacher_layer_name, other_term.student_layer_name = "hidden", "hidden"
    other = make(terms=[kdkeras.LogitsDistillation(2.0), other_term])
    other.load_weights(tmp_path / "distiller.weights.h5")
    assert float(other_term.steps.count) == 8.0
    np.testing.assert_array_equal(other_term.head.kernel.numpy(), kernel.numpy())


def test_a_term_that_needs_indices_must_accept_them():
    class Needy(losses.DistillationLoss):
        needs_indices = True

        def call(self, teacher_outputs, student_outputs, y=None):
            return keras.ops.zeros((keras.ops.shape(student_outputs)[0],))

    with pytest.raises(TypeError, match="accept `indices=`.*distillation_losses\\[0\\]"):
        make(terms=Needy())


def test_standardization_needs_a_single_teacher():
    with pytest.raises(ValueError, match="single teacher.*standardize=True"):
        kdkeras.Distiller(
            [mlp(8, "t1"), mlp(8, "t2")],
            mlp(4, "s"),
            kdkeras.LogitsDistillation(standardize=True),
        )


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains(policy):
    keras.config.set_dtype_policy(policy)
    distiller = make(terms=[kdkeras.LogitsDistillation(4.0), kdkeras.DKD()])
    distiller.compile(optimizer="adam", loss=ce())
    before = [w.copy() for w in distiller.student.get_weights()]
    history = distiller.fit(X, Y, epochs=2, batch_size=8, verbose=0)
    assert all(np.isfinite(v) for v in history.history["loss"])
    assert any(not np.array_equal(a, b) for a, b in zip(before, distiller.student.get_weights()))


def test_multi_teacher_averages_soft_targets():
    t1, t2 = mlp(8, "t1", seed=1), mlp(8, "t2", seed=3)
    temperature = 2.0
    distiller = kdkeras.Distiller(
        [t1, t2],
        mlp(4, "student", seed=2),
        kdkeras.LogitsDistillation(temperature),
        student_loss_weight=0.0,
        teacher_weights=[1.0, 3.0],
    )
    distiller.compile(optimizer="sgd")
    result = distiller.evaluate(X, batch_size=16, return_dict=True, verbose=0)
    s = distiller.student(X).numpy()
    p = 0.25 * tf.nn.softmax(t1(X) / temperature) + 0.75 * tf.nn.softmax(t2(X) / temperature)
    log_q = tf.nn.log_softmax(s / temperature)
    kd = tf.reduce_mean(tf.reduce_sum(p * (tf.math.log(p) - log_q), -1)) * temperature**2
    assert result["logits_distillation_loss"] == pytest.approx(float(kd), rel=1e-5)
    assert not t1.trainable and not t2.trainable


def test_several_teachers_need_logit_terms():
    with pytest.raises(
        ValueError, match="Received: distillation_losses\\[0\\]=FeatureDistillation"
    ):
        kdkeras.Distiller([mlp(8, "t1"), mlp(8, "t2")], mlp(4, "s"), kdkeras.FeatureDistillation())


@pytest.mark.subprocess
def test_saved_distiller_reloads_compiled_after_import_kdkeras(tmp_path):
    distiller = make(terms=[kdkeras.LogitsDistillation(3.0), kdkeras.DKD()])
    distiller.compile(optimizer=keras.optimizers.SGD(0.05), loss=ce(), metrics=["accuracy"])
    distiller.fit(X, Y, epochs=1, verbose=0)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    before = distiller.evaluate(X, Y, return_dict=True, verbose=0)
    code = (
        "import keras, kdkeras, numpy as np, sys\n"
        f"m = keras.saving.load_model({str(path)!r})\n"
        "x = np.load(sys.argv[1]); y = np.load(sys.argv[2])\n"
        "r = m.evaluate(x, y, return_dict=True, verbose=0)\n"
        "print(type(m).__name__, type(m.optimizer).__name__, repr(r['loss']), repr(r['dkd_loss']))\n"
    )
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", Y)
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    name, optimizer, loss, dkd = result.stdout.split()[-4:]
    assert (name, optimizer) == ("Distiller", "SGD")
    assert float(loss) == pytest.approx(before["loss"], rel=1e-5)
    assert float(dkd) == pytest.approx(before["dkd_loss"], rel=1e-5)


def test_keras_distillation_terms_are_accepted():
    from keras.distillation import DistillationLoss as KerasTerm
    from keras.distillation import FeatureDistillation as KerasFeature

    class MeanGap(KerasTerm):
        def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
            return keras.ops.mean(keras.ops.abs(teacher_outputs - student_outputs))

    distiller = make(terms=[MeanGap(), KerasFeature(loss="mse")], student_loss_weight=0.0)
    distiller.compile(optimizer="sgd")
    result = distiller.evaluate(X, batch_size=16, return_dict=True, verbose=0)
    t = distiller.teacher(X, training=False).numpy()
    s = distiller.student(X).numpy()
    assert result["mean_gap_loss"] == pytest.approx(np.abs(t - s).mean(), rel=1e-5)
    assert result["feature_distillation_loss"] == pytest.approx(((t - s) ** 2).mean(), rel=1e-5)


def test_config_round_trip_and_student_saves_as_plain_keras(tmp_path):
    distiller = make(
        terms=[kdkeras.LogitsDistillation(3.0), kdkeras.DKD(beta=2.0)],
        distillation_loss_weights=[1.0, 0.25],
        student_loss_weight=0.2,
    )
    restored = kdkeras.Distiller.from_config(distiller.get_config())
    assert restored.get_config() == distiller.get_config()
    assert restored.student_loss_weight == 0.2
    assert [type(t) for t in restored.distillation_losses] == [
        kdkeras.LogitsDistillation,
        kdkeras.DKD,
    ]

    distiller.compile(optimizer="adam", loss=ce())
    distiller.fit(X, Y, epochs=1, verbose=0)
    path = tmp_path / "student.keras"
    distiller.student.save(path)
    import zipfile

    with zipfile.ZipFile(path) as archive:
        assert b"kdkeras" not in archive.read("config.json")
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(X), distiller.student(X), atol=1e-6)

    whole = tmp_path / "distiller.keras"
    distiller.save(whole)
    reloaded = keras.saving.load_model(whole, compile=False)
    np.testing.assert_allclose(reloaded(X), distiller(X), atol=1e-6)


def test_cached_teacher_outputs_give_the_same_training_as_online():
    def run(cached):
        distiller = make(
            terms=[
                kdkeras.LogitsDistillation(2.0),
                kdkeras.FeatureDistillation(
                    teacher_layer_name="hidden", student_layer_name="hidden"
                ),
            ],
            student=mlp(8, "student", seed=2),
        )
        distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss=ce())
        x = distiller.cache_teacher_outputs(X, batch_size=5) if cached else X
        distiller.fit(x, Y, batch_size=4, epochs=2, shuffle=False, verbose=0)
        logs = distiller.evaluate(x, Y, return_dict=True, verbose=0)
        return [w.numpy() for w in distiller.student.trainable_variables], logs

    online_w, online_logs = run(False)
    cached_w, cached_logs = run(True)
    for a, b in zip(online_w, cached_w):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for key in online_logs:
        assert cached_logs[key] == pytest.approx(online_logs[key], rel=1e-5)


def test_cached_arrays_stay_aligned_when_fit_shuffles():
    def run(cached):
        distiller = make(student_loss_weight=0.3)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss=ce())
        x = distiller.cache_teacher_outputs(X) if cached else X
        keras.utils.set_random_seed(7)
        distiller.fit(x, Y, epochs=2, batch_size=4, shuffle=True, verbose=0)
        return [w.numpy() for w in distiller.student.trainable_variables]

    online, cached = run(False), run(True)
    unshuffled = make(student_loss_weight=0.3)
    unshuffled.compile(optimizer=keras.optimizers.SGD(0.1), loss=ce())
    unshuffled.fit(X, Y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    # The shuffle changed the training, and cached targets followed it exactly.
    assert any(np.abs(a - b).max() > 1e-4 for a, b in zip(online, unshuffled.student.get_weights()))
    for a, b in zip(online, cached):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_cache_on_a_deterministic_dataset_and_refusal_for_shuffle_or_augmentation():
    distiller = make()
    distiller.compile(optimizer="sgd", loss=ce())
    ds = tf.data.Dataset.from_tensor_slices((X, Y)).batch(5)
    cached = distiller.cache_teacher_outputs(ds)
    assert distiller.evaluate(cached, return_dict=True, verbose=0)["loss"] == pytest.approx(
        distiller.evaluate(ds, return_dict=True, verbose=0)["loss"], rel=1e-6
    )
    with pytest.raises(ValueError, match="Shuffle"):
        distiller.cache_teacher_outputs(
            tf.data.Dataset.from_tensor_slices((X, Y)).shuffle(16).batch(4)
        )
    noisy = (
        tf.data.Dataset.from_tensor_slices((X, Y))
        .map(lambda x, y: (x + tf.random.normal(tf.shape(x)), y))
        .batch(4)
    )
    with pytest.raises(ValueError, match="Random"):
        distiller.cache_teacher_outputs(noisy)
    reordering = (
        tf.data.Dataset.from_tensor_slices((X, Y))
        .map(lambda x, y: (x * 2.0, y), num_parallel_calls=2, deterministic=False)
        .batch(4)
    )
    with pytest.raises(ValueError, match="deterministic=False"):
        distiller.cache_teacher_outputs(reordering)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(student_loss_weight=1.5), "student_loss_weight"),
        (dict(student_loss_weight=float("nan")), "student_loss_weight"),
        (dict(distillation_loss_weights=[-1.0]), "distillation_loss_weights"),
        (dict(distillation_loss_weights=[float("inf")]), "distillation_loss_weights"),
        (dict(distillation_loss_weights=[1.0, 1.0]), "one weight per distillation term"),
        (dict(terms=[]), "at least one distillation term"),
        (dict(terms="kl"), "distillation_losses\\[0\\]"),
        (dict(terms=kdkeras.FeatureDistillation(teacher_layer_name="nope")), "Available layers"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make(**kwargs)


def test_mismatched_output_shapes_and_missing_loss_are_refused():
    teacher = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5)])
    with pytest.raises(ValueError, match="same shape"):
        kdkeras.Distiller(teacher, mlp(4, "student"), kdkeras.LogitsDistillation())
    with pytest.raises(TypeError, match="Received: student="):
        kdkeras.Distiller(teacher, "model", kdkeras.LogitsDistillation())
    distiller = make()
    with pytest.raises(ValueError, match="Received: loss=None"):
        distiller.compile(optimizer="sgd")


def test_other_backends_get_a_clear_error(monkeypatch):
    teacher, student = mlp(8, "teacher"), mlp(4, "student")
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(RuntimeError, match="needs the TensorFlow backend.*Received: backend='jax'"):
        kdkeras.Distiller(teacher, student, kdkeras.LogitsDistillation())
