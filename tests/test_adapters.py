"""Adapters: built automatically or given, trained, never in the student."""

import os
import zipfile

import keras
import numpy as np
import pytest

import kdkeras
from kdkeras.distill import adapters

L = keras.layers


@pytest.mark.parametrize(
    "s_shape,t_shape,kinds",
    [
        ((None, 4, 4, 3), (None, 4, 4, 8), ["Conv2D"]),
        ((None, 8, 8, 3), (None, 4, 4, 8), ["AveragePooling2D", "Conv2D"]),
        ((None, 2, 2, 3), (None, 4, 4, 8), ["Conv2D", "UpSampling2D"]),
        ((None, 3, 3, 8), (None, 4, 4, 8), ["Resizing"]),
        ((None, 5), (None, 7), ["Dense"]),
        ((None, 6, 5), (None, 6, 7), ["Dense"]),
        ((None, 4, 4, 3), (None, 7), ["GlobalAveragePooling2D", "Dense"]),
        ((None, 5), (None, 2, 2, 3), ["Dense", "Reshape"]),
    ],
)
def test_make_adapter_maps_to_the_teacher_shape(s_shape, t_shape, kinds):
    adapter = adapters.make_adapter(s_shape, t_shape)
    assert [type(layer).__name__ for layer in adapter.layers] == kinds
    x = np.random.default_rng(0).normal(size=(2,) + s_shape[1:]).astype("float32")
    assert tuple(adapter(x).shape) == (2,) + t_shape[1:]


def test_make_adapter_none_for_equal_shapes_and_error_otherwise():
    assert adapters.make_adapter((None, 4, 4, 3), (None, 4, 4, 3)) is None
    with pytest.raises(ValueError, match="adapter="):
        adapters.make_adapter((None, 4, 5), (None, 3, 5))


def teacher_model():
    i = keras.Input((8, 8, 1))
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="t_conv")(i)
    x = L.GlobalAveragePooling2D(name="t_gap")(x)
    x = L.Dense(5, activation="relu", name="t_emb")(x)
    return keras.Model(i, L.Dense(3, name="t_out")(x), name="teacher")


class Student(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = L.Conv2D(2, 3, strides=2, padding="same", activation="relu", name="s_conv")
        self.gap = L.GlobalAveragePooling2D(name="s_gap")
        self.out = L.Dense(3, name="s_out")

    def call(self, x, training=None):
        return self.out(self.gap(self.conv(x)))


def functional_student():
    i = keras.Input((8, 8, 1))
    x = L.Conv2D(2, 3, strides=2, padding="same", activation="relu", name="s_conv")(i)
    x = L.GlobalAveragePooling2D(name="s_gap")(x)
    return keras.Model(i, L.Dense(3, name="s_out")(x), name="student")


def data(n=8):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 8, 8, 1)).astype("float32"), rng.integers(0, 3, size=(n,))


@pytest.mark.parametrize("kind", ["functional", "subclassed"])
def test_auto_adapters_are_built_tracked_and_trained(kind, capsys):
    teacher = teacher_model()
    if kind == "functional":
        student = functional_student()
    else:
        student = Student(name="student")
        student(np.zeros((1, 8, 8, 1), "float32"))
    terms = [
        kdkeras.LogitsDistillation(),
        kdkeras.FeatureDistillation(teacher_layer_name="t_conv", student_layer_name="s_conv"),
        kdkeras.FeatureDistillation(teacher_layer_name="t_emb", student_layer_name="s_gap"),
        kdkeras.AttentionTransfer("t_conv", "s_conv"),
    ]
    distiller = kdkeras.Distiller(teacher, student, terms)
    printed = capsys.readouterr().out
    assert "Conv2D 1x1 ->6, UpSample 2x2" in printed and "Dense ->5" in printed
    assert distiller.adapters[0] is None and distiller.adapters[3] is None
    conv_adapter, dense_adapter = distiller.adapters[1], distiller.adapters[2]
    assert conv_adapter.built and dense_adapter.built
    ids = {id(v) for v in distiller.trainable_variables}
    adapter_vars = conv_adapter.trainable_variables + dense_adapter.trainable_variables
    assert len(adapter_vars) == 4 and all(id(v) in ids for v in adapter_vars)
    assert len(distiller.trainable_variables) == len(student.trainable_variables) + 4
    before = [v.numpy().copy() for v in adapter_vars]
    distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data()
    distiller.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert all(not np.allclose(b, v.numpy()) for b, v in zip(before, adapter_vars))


def test_equal_shapes_get_no_adapter_and_no_table(capsys):
    teacher, student = teacher_model(), functional_student()
    term = kdkeras.FeatureDistillation(teacher_layer_name="t_out", student_layer_name="s_out")
    distiller = kdkeras.Distiller(teacher, student, term)
    assert distiller.adapters == [None]
    assert "adapter" not in capsys.readouterr().out


def test_user_adapter_is_used_and_checked():
    teacher, student = teacher_model(), functional_student()
    mine = L.Dense(5, name="my_projection")
    term = kdkeras.FeatureDistillation(
        teacher_layer_name="t_emb", student_layer_name="s_gap", adapter=mine
    )
    distiller = kdkeras.Distiller(teacher, student, term)
    assert distiller.adapters[0] is mine and mine.built
    wrong = kdkeras.FeatureDistillation(
        teacher_layer_name="t_emb", student_layer_name="s_gap", adapter=L.Dense(4)
    )
    with pytest.raises(ValueError, match=r"adapter of distillation_losses\[0\].*\(None, 5\)"):
        kdkeras.Distiller(teacher_model(), functional_student(), wrong)


def test_saved_student_contains_no_adapter(tmp_path):
    teacher, student = teacher_model(), functional_student()
    terms = [
        kdkeras.FeatureDistillation(teacher_layer_name="t_conv", student_layer_name="s_conv"),
        kdkeras.FeatureDistillation(teacher_layer_name="t_emb", student_layer_name="s_gap"),
    ]
    distiller = kdkeras.Distiller(teacher, student, terms, student_loss_weight=0.0)
    distiller.compile("adam")
    x, _ = data()
    distiller.fit(x, epochs=1, batch_size=4, verbose=0)
    assert all(a is not None for a in distiller.adapters)
    path = os.path.join(tmp_path, "student.keras")
    distiller.student.save(path)
    loaded = keras.saving.load_model(path)  # no custom objects needed
    assert len(loaded.weights) == len(student.weights) == 4
    assert {w.shape for w in loaded.weights} == {w.shape for w in student.weights}
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json").decode()
    assert "adapter" not in config and "kdkeras" not in config
    adapter_shapes = {tuple(w.shape) for a in distiller.adapters for w in a.weights}
    assert (1, 1, 2, 6) in adapter_shapes
    assert (1, 1, 2, 6) not in {tuple(w.shape) for w in loaded.weights}
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), student.predict(x, verbose=0), rtol=1e-6
    )


def test_mixed_precision_features_train():
    keras.config.set_dtype_policy("mixed_float16")
    teacher, student = teacher_model(), functional_student()
    terms = [
        kdkeras.FeatureDistillation(teacher_layer_name="t_conv", student_layer_name="s_conv"),
        kdkeras.RKD("t_emb", "s_gap"),
        kdkeras.AttentionTransfer("t_conv", "s_conv"),
    ]
    distiller = kdkeras.Distiller(teacher, student, terms)
    assert distiller.adapters[0].compute_dtype == "float16"
    distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data()
    history = distiller.fit(x, y, epochs=1, batch_size=4, verbose=0).history
    assert all(np.isfinite(v[0]) for v in history.values())
