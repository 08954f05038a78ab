"""Taps on every kind of Keras model, in a single student pass."""

import keras
import numpy as np
import pytest

import kdkeras
from kdkeras.distill import taps

L = keras.layers


def x_data(n=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 6, 6, 1)).astype("float32")


def y_data(n=8, seed=1):
    return np.random.default_rng(seed).integers(0, 3, size=(n,))


def functional(prefix="f"):
    i = keras.Input((6, 6, 1))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name=f"{prefix}_conv")(i)
    x = L.GlobalAveragePooling2D(name=f"{prefix}_gap")(x)
    return keras.Model(i, L.Dense(3, name=f"{prefix}_out")(x), name=f"{prefix}_model")


def sequential(prefix="q"):
    return keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            L.Conv2D(4, 3, padding="same", activation="relu", name=f"{prefix}_conv"),
            L.GlobalAveragePooling2D(name=f"{prefix}_gap"),
            L.Dense(3, name=f"{prefix}_out"),
        ],
        name=f"{prefix}_model",
    )


def nested(prefix="n"):
    # A Functional backbone inside a Sequential: taps reach into it.
    i = keras.Input((6, 6, 1))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name=f"{prefix}_conv")(i)
    backbone = keras.Model(
        i, L.GlobalAveragePooling2D(name=f"{prefix}_gap")(x), name=f"{prefix}_backbone"
    )
    return keras.Sequential(
        [keras.Input((6, 6, 1)), backbone, L.Dense(3, name=f"{prefix}_out")],
        name=f"{prefix}_model",
    )


class Subclassed(keras.Model):
    def __init__(self, prefix="s", **kwargs):
        super().__init__(**kwargs)
        self.conv = L.Conv2D(4, 3, padding="same", activation="relu", name=f"{prefix}_conv")
        self.gap = L.GlobalAveragePooling2D(name=f"{prefix}_gap")
        self.out = L.Dense(3, name=f"{prefix}_out")

    def call(self, x, training=None):
        return self.out(self.gap(self.conv(x)))


def subclassed(prefix="s"):
    model = Subclassed(prefix, name=f"{prefix}_model")
    model(np.zeros((1, 6, 6, 1), "float32"))
    return model


KINDS = {
    "functional": functional,
    "sequential": sequential,
    "nested": nested,
    "subclassed": subclassed,
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_feature_shapes_on_every_model_kind(kind):
    model = KINDS[kind]("m")
    conv = taps.find_layer(model, "m_conv")
    gap = taps.find_layer(model, "m_gap")
    shapes = taps.feature_shapes(model, [conv, gap, None])
    assert shapes == [(None, 6, 6, 4), (None, 4), (None, 3)]
    assert "call" not in conv.__dict__  # taps removed after the trace


@pytest.mark.parametrize("student_kind", list(KINDS))
@pytest.mark.parametrize("teacher_kind", ["functional", "subclassed"])
def test_tapped_features_are_the_layers_outputs(teacher_kind, student_kind):
    teacher = KINDS[teacher_kind]("t")
    student = KINDS[student_kind]("s")
    distiller = kdkeras.Distiller(
        teacher,
        student,
        kdkeras.FeatureDistillation(teacher_layer_name="t_gap", student_layer_name="s_gap"),
        student_loss_weight=0.0,
    )
    distiller.compile(optimizer="sgd")
    x = x_data()
    logs = distiller.evaluate(x, batch_size=8, return_dict=True, verbose=0)
    # Reference features computed independently of the taps.
    t_feat = taps.find_layer(teacher, "t_gap")(taps.find_layer(teacher, "t_conv")(x))
    s_feat = taps.find_layer(student, "s_gap")(taps.find_layer(student, "s_conv")(x))
    want = np.mean((np.asarray(s_feat) - np.asarray(t_feat)) ** 2)
    assert want > 0
    np.testing.assert_allclose(logs["feature_distillation_loss"], want, rtol=1e-5)
    # And training moves the student's features towards the teacher's.
    distiller.fit(x, epochs=3, batch_size=8, verbose=0)
    after = distiller.evaluate(x, batch_size=8, return_dict=True, verbose=0)
    assert after["feature_distillation_loss"] < want


def test_layer_objects_are_accepted():
    teacher, student = functional("t"), nested("s")
    term = kdkeras.FeatureDistillation(
        teacher_layer_name=teacher.get_layer("t_conv"),
        student_layer_name=taps.find_layer(student, "s_conv"),
    )
    distiller = kdkeras.Distiller(teacher, student, term)
    assert distiller._student_taps[0] is taps.find_layer(student, "s_conv")


def test_unknown_layer_names_list_the_available_ones():
    teacher, student = functional("t"), subclassed("s")
    with pytest.raises(ValueError, match=r"Available layers: \[.*'s_conv'.*'s_gap'"):
        kdkeras.Distiller(teacher, student, kdkeras.AttentionTransfer("t_conv", "s_nope"))
    with pytest.raises(ValueError, match=r"No layer 't_nope' in the teacher.*'t_conv'"):
        kdkeras.Distiller(teacher, student, kdkeras.RKD("t_nope", "s_conv"))


class CallCounter(L.Layer):
    """Identity that counts its executions in a variable (graph-safe)."""

    def build(self, input_shape):
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, name="calls")

    def call(self, x):
        self.calls.assign_add(1.0)
        return x


def test_student_runs_once_per_step_with_many_feature_terms():
    teacher = functional("t")
    i = keras.Input((6, 6, 1))
    x = CallCounter(name="counter")(i)
    x = L.Conv2D(2, 3, strides=2, padding="same", name="s_conv")(x)
    x = L.BatchNormalization(momentum=0.5, name="s_bn")(x)
    x = L.Dropout(0.5, name="s_drop")(x)
    x = L.GlobalAveragePooling2D(name="s_gap")(x)
    student = keras.Model(i, L.Dense(3, name="s_out")(x))
    terms = [
        kdkeras.LogitsDistillation(temperature=2.0),
        kdkeras.FeatureDistillation(teacher_layer_name="t_conv", student_layer_name="s_conv"),
        kdkeras.AttentionTransfer("t_conv", "s_drop"),
        kdkeras.RKD("t_gap", "s_gap"),
        kdkeras.PKT("t_gap", "s_bn"),
    ]
    distiller = kdkeras.Distiller(teacher, student, terms)
    distiller.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    bn = student.get_layer("s_bn")
    x = np.ones((8, 6, 6, 1), "float32")
    distiller.fit(x, y_data(), epochs=1, batch_size=4, shuffle=False, verbose=0)
    counter = student.get_layer("counter")
    assert float(counter.calls.numpy()) == 2.0  # 2 steps, 1 student call each
    # evaluate runs the student once per batch too, in inference mode.
    moving = bn.moving_mean.numpy().copy()
    distiller.evaluate(x, y_data(), batch_size=4, verbose=0)
    assert float(counter.calls.numpy()) == 4.0
    np.testing.assert_array_equal(bn.moving_mean.numpy(), moving)


def test_batchnorm_updated_once_per_step():
    # Constant batches: after one step, moving_mean = (1 - momentum) * mean.
    teacher = functional("t")
    i = keras.Input((6, 6, 1))
    x = L.Conv2D(2, 3, padding="same", name="s_conv", kernel_initializer="ones")(i)
    x = L.BatchNormalization(momentum=0.5, name="s_bn")(x)
    x = L.GlobalAveragePooling2D(name="s_gap")(x)
    student = keras.Model(i, L.Dense(3, name="s_out")(x))
    terms = [
        kdkeras.FeatureDistillation(teacher_layer_name="t_conv", student_layer_name="s_bn"),
        kdkeras.SimilarityPreserving("t_conv", "s_conv"),
    ]
    distiller = kdkeras.Distiller(teacher, student, terms, student_loss_weight=0.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    x = np.ones((4, 6, 6, 1), "float32")
    batch_mean = np.asarray(student.get_layer("s_conv")(x)).mean(axis=(0, 1, 2))
    distiller.fit(x, epochs=1, batch_size=4, verbose=0)
    np.testing.assert_allclose(
        student.get_layer("s_bn").moving_mean.numpy(), 0.5 * batch_mean, rtol=1e-5
    )


def test_propose_layer_pairs_prints_and_pairs_by_depth(capsys):
    i = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="t_c1")(i)
    x = L.MaxPooling2D(name="t_p1")(x)
    x = L.Conv2D(16, 3, padding="same", name="t_c2")(x)
    x = L.ReLU(name="t_r2")(x)
    x = L.MaxPooling2D(name="t_p2")(x)
    x = L.Flatten(name="t_flat")(x)
    x = L.Dense(12, activation="relu", name="t_emb")(x)
    teacher = keras.Model(i, L.Dense(3, name="t_out")(x))
    student = Subclassed("s", name="student")
    student(np.zeros((1, 8, 8, 1), "float32"))
    pairs = kdkeras.propose_layer_pairs(teacher, student, n=2)
    printed = capsys.readouterr().out
    assert pairs == [("t_r2", "s_conv"), ("t_emb", "s_gap")]
    assert "t_r2" in printed and "(4, 4, 16)" in printed and "adapter" in printed
    assert kdkeras.propose_layer_pairs(teacher, student, n=1, verbose=False) == [("t_emb", "s_gap")]
    with pytest.raises(ValueError, match="n"):
        kdkeras.propose_layer_pairs(teacher, student, n=0)


def test_unbuilt_subclassed_model_explains_what_to_do():
    model = Subclassed("u")
    with pytest.raises(ValueError, match="never built"):
        taps.feature_shapes(model, [model.conv])
