"""The catalogue of bad inputs (docs/reliability.md), one test per entry.

Library calls raise `ValueError`/`TypeError` naming what was expected and
what was received, before training where the input allows; the CLI prints
one line and exits non-zero, with a traceback only under `--debug`.
"""

import math
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdkeras
from kdkeras import cli

NAN, INF = float("nan"), float("inf")


def _teacher(classes=4):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(6, name="t_hidden"), keras.layers.Dense(classes)]
    )


def _student(classes=4):
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(5, name="s_hidden"), keras.layers.Dense(classes)]
    )


def _distiller(teacher=None, student_loss_weight=0.5):
    distiller = kdkeras.Distiller(
        teacher or _teacher(),
        _student(),
        kdkeras.LogitsDistillation(temperature=2.0),
        student_loss_weight=student_loss_weight,
    )
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return distiller


def _data(n=16):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 8)).astype("float32"), rng.integers(0, 4, size=n)


def _untouched(distiller, before):
    for got, want in zip(distiller.student.get_weights(), before):
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------ building the Distiller


def test_output_shapes_differ():
    with pytest.raises(
        ValueError, match=r"same shape.*Received: teacher .*\(None, 4\).*\(None, 3\)"
    ):
        kdkeras.Distiller(_teacher(4), _student(3), kdkeras.LogitsDistillation())


@pytest.mark.parametrize(
    "kwargs, received",
    [
        (
            {"teacher_layer_name": "nope", "student_layer_name": "s_hidden"},
            "teacher_layer_name='nope'",
        ),
        (
            {"teacher_layer_name": "t_hidden", "student_layer_name": "nah"},
            "student_layer_name='nah'",
        ),
    ],
)
def test_unknown_layer_names(kwargs, received):
    with pytest.raises(ValueError, match=rf"Available layers: .*Received: {received}"):
        kdkeras.Distiller(_teacher(), _student(), kdkeras.FeatureDistillation(**kwargs))


@pytest.mark.parametrize("cls", [kdkeras.LogitsDistillation, kdkeras.DKD, kdkeras.DIST])
@pytest.mark.parametrize("value", [0.0, -1.0, NAN, INF])
def test_temperature_must_be_positive_and_finite(cls, value):
    with pytest.raises(
        ValueError, match=r"`temperature` to be a finite number > 0\. Received: temperature="
    ):
        cls(temperature=value)


@pytest.mark.parametrize("weight", [-1.0, NAN, INF])
def test_distillation_loss_weights_negative_or_non_finite(weight):
    with pytest.raises(
        ValueError, match=r"finite number >= 0\. Received: distillation_loss_weights="
    ):
        kdkeras.Distiller(
            _teacher(), _student(), kdkeras.LogitsDistillation(), distillation_loss_weights=[weight]
        )


@pytest.mark.parametrize("weight", [-0.1, 1.5, NAN, INF])
def test_student_loss_weight_out_of_range(weight):
    with pytest.raises(ValueError, match=r"in \[0, 1\]\. Received: student_loss_weight="):
        kdkeras.Distiller(
            _teacher(), _student(), kdkeras.LogitsDistillation(), student_loss_weight=weight
        )


def test_wrong_types():
    with pytest.raises(
        TypeError, match="Expected `student` to be a keras.Model. Received: student="
    ):
        kdkeras.Distiller(_teacher(), "student.keras", kdkeras.LogitsDistillation())
    with pytest.raises(TypeError, match=r"Received: distillation_losses\[0\]="):
        kdkeras.Distiller(_teacher(), _student(), ["kd"])


@pytest.mark.parametrize("error", [TypeError, ValueError])
def test_wrong_types_keras_distillation_reports_as_value_errors(error):
    # keras.distillation raises ValueError for these: code written for it,
    # and for kdkeras's TypeError, both catch them.
    with pytest.raises(error, match="Expected `teacher` to be a keras.Model. Received: teacher="):
        kdkeras.Distiller("teacher.keras", _student(), kdkeras.LogitsDistillation())
    with pytest.raises(error, match=r"Received: teacher\[1\]="):
        kdkeras.Distiller([_teacher(), None], _student(), kdkeras.LogitsDistillation())
    with pytest.raises(error, match="Received: student="):
        kdkeras.Distiller(_teacher(), "student.keras", kdkeras.LogitsDistillation())
    term = kdkeras.FeatureDistillation(teacher_layer_name=3, student_layer_name="s_hidden")
    with pytest.raises(error, match="Received: teacher_layer_name=3"):
        kdkeras.Distiller(_teacher(), _student(), term)


# ---------------------------------------------------- data, before fit


@pytest.mark.parametrize("bad_label, index", [(4, 3), (-1, 5), (99, 0)])
def test_labels_out_of_range(bad_label, index):
    distiller = _distiller()
    before = distiller.student.get_weights()
    x, y = _data()
    y[index] = bad_label
    with pytest.raises(
        ValueError, match=rf"labels in \[0, 4\).*Received: y\[{index}\]={bad_label}"
    ):
        distiller.fit(x, y, epochs=1, verbose=0)
    _untouched(distiller, before)


def test_labels_with_trailing_axis_are_checked():
    x, y = _data()
    y[2] = 7
    with pytest.raises(ValueError, match=r"Received: y\[2\]=7"):
        _distiller().fit(x, y[:, None], epochs=1, verbose=0)


def test_empty_arrays():
    with pytest.raises(ValueError, match="at least one sample. Received: x with 0 samples"):
        _distiller().fit(np.zeros((0, 8), "float32"), np.zeros((0,), "int64"), verbose=0)


def test_empty_dataset_of_known_size():
    x, y = _data()
    empty = tf.data.Dataset.from_tensor_slices((x, y)).take(0).batch(4)
    with pytest.raises(ValueError, match=r"non-empty dataset.*cardinality 0"):
        _distiller().fit(empty, verbose=0)


def test_empty_dataset_of_unknown_size():
    x, y = _data()
    empty = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: False).batch(4)
    assert int(empty.cardinality()) < 0  # unknown: only training can tell
    with pytest.raises(ValueError, match="non-empty dataset.*no batch in epoch 1"):
        _distiller().fit(empty, verbose=0)


@pytest.mark.parametrize("value, kind", [(NAN, "NaN"), (INF, "Inf"), (-INF, "Inf")])
def test_non_finite_inputs(value, kind):
    distiller = _distiller()
    before = distiller.student.get_weights()
    x, y = _data()
    x[6, 2] = value
    x[9, 0] = value
    with pytest.raises(
        ValueError,
        match=rf"finite values in x\. Received: x with 2 sample\(s\) holding {kind}, the first at index 6",
    ):
        distiller.fit(x, y, verbose=0)
    _untouched(distiller, before)


def test_non_finite_validation_data():
    x, y = _data()
    xv = x.copy()
    xv[1, 1] = NAN
    with pytest.raises(ValueError, match="finite values in validation_data.*index 1"):
        _distiller().fit(x, y, validation_data=(xv, y), verbose=0)


def test_non_finite_cached_teacher_outputs():
    distiller = _distiller()
    x, y = _data()
    cached = distiller.cache_teacher_outputs(x)
    outputs = cached[kdkeras.distill.teacher_cache.TARGETS_KEY]["outputs"]
    outputs[0][3, 1] = NAN
    with pytest.raises(ValueError, match="finite values in the cached teacher outputs.*index 3"):
        distiller.fit(cached, y, verbose=0)


def test_negative_sample_weights():
    x, y = _data()
    weights = np.ones(len(x), "float32")
    weights[4] = -1.0
    with pytest.raises(ValueError, match="sample weights >= 0"):
        _distiller().fit(x, y, sample_weight=weights, verbose=0)


# ------------------------------------------------- data, during training


def _crd_distiller(num_samples=16):
    distiller = kdkeras.Distiller(
        _teacher(),
        _student(),
        [
            kdkeras.LogitsDistillation(temperature=2.0),
            kdkeras.CRD("t_hidden", "s_hidden", num_samples=num_samples, feat_dim=4, nce_k=3),
        ],
    )
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return distiller


def test_dataset_without_indices_for_a_term_that_needs_them():
    x, y = _data()
    distiller = _crd_distiller()
    before = distiller.student.get_weights()
    with pytest.raises(ValueError, match="CRD needs them.*Received: a dataset with element_spec"):
        distiller.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), verbose=0)
    _untouched(distiller, before)


def test_generator_batch_without_indices_for_a_term_that_needs_them():
    x, y = _data()

    def batches():
        while True:
            yield x[:4], y[:4]

    with pytest.raises(ValueError, match=r"distillation_losses\[1\] \(CRD.*a batch without"):
        _crd_distiller().fit(batches(), steps_per_epoch=1, verbose=0)


def test_more_samples_than_the_memory_bank_has_rows():
    x, y = _data()
    distiller = _crd_distiller(num_samples=5)
    with pytest.raises(ValueError, match=r"\[0, 5\).*Received: indices from 0 to 15"):
        distiller.fit(x, y, verbose=0)


def test_standardization_with_several_teachers():
    with pytest.raises(ValueError, match="Received: 2 teachers.*standardize=True"):
        kdkeras.Distiller(
            [_teacher(), _teacher()], _student(), kdkeras.LogitsDistillation(standardize=True)
        )


def test_non_finite_batch_in_a_dataset_names_the_step():
    x, y = _data()
    x[5, 0] = NAN  # second batch of 4
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    with pytest.raises(FloatingPointError, match=r"non-finite .*loss.* at epoch 1, step 2 "):
        _distiller().fit(ds, epochs=2, verbose=0)


def test_non_finite_teacher_outputs_name_the_step_and_the_teacher():
    teacher = _teacher()
    kernel, bias = teacher.layers[-1].get_weights()
    bias[:] = NAN
    teacher.layers[-1].set_weights([kernel, bias])
    x, y = _data()
    with pytest.raises(FloatingPointError) as info:
        _distiller(teacher).fit(x, y, batch_size=4, verbose=0)
    message = str(info.value)
    assert "at epoch 1, step 1" in message
    assert "logits_distillation_loss" in message
    assert "teacher's outputs" in message
    assert "student_loss=" in message  # finite, shown for comparison


def test_guard_is_added_once(monkeypatch):
    x, y = _data()
    received = []
    real_fit = keras.Model.fit

    import functools
    import inspect

    @functools.wraps(real_fit)  # keeps fit's signature, which kdkeras binds
    def spy(self, *args, **kwargs):
        bound = inspect.signature(real_fit).bind(self, *args, **kwargs)
        received.append(list(bound.arguments.get("callbacks") or []))
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", spy)
    guard = kdkeras.callbacks.TerminateOnNonFinite()
    history = _distiller().fit(x, y, verbose=0, callbacks=[guard])
    _distiller().fit(x, y, verbose=0)
    assert math.isfinite(history.history["loss"][0])
    guards = [
        [c for c in callbacks if isinstance(c, kdkeras.callbacks.TerminateOnNonFinite)]
        for callbacks in received
    ]
    assert [len(g) for g in guards] == [1, 1], received  # the user's, then one added
    assert guards[0][0] is guard


# ------------------------------------------------------------- files


@pytest.fixture
def keras_file(tmp_path):
    path = tmp_path / "student.keras"
    _student().save(path)
    return path


def _truncated(path, tmp_path):
    data = path.read_bytes()
    out = tmp_path / "truncated.keras"
    out.write_bytes(data[: len(data) // 2])
    return out


def _foreign(tmp_path, name, content=b"this is not a model\n"):
    out = tmp_path / name
    out.write_bytes(content)
    return out


def _lambda_file(tmp_path):
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Lambda(lambda v: v * 2.0), keras.layers.Dense(4)]
    )
    path = tmp_path / "lambda.keras"
    model.save(path)
    return path


def _load_runner():
    runtime = pytest.importorskip("kdkeras.deploy.runners")
    return runtime.load_runner


@pytest.mark.parametrize("kind", ["truncated", "text", "zip_without_model"])
def test_bad_keras_file(kind, keras_file, tmp_path):
    if kind == "truncated":
        path = _truncated(keras_file, tmp_path)
    elif kind == "text":
        path = _foreign(tmp_path, "foreign.keras")
    else:
        path = tmp_path / "other.keras"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match=rf"Expected a Keras model file.*Received: path='{path}'"):
        _load_runner()(str(path))


@pytest.mark.parametrize("content", [b"not onnx at all", b"\x08\x07" + bytes(range(200))])
def test_bad_onnx_file(content, tmp_path):
    pytest.importorskip("onnxruntime")
    path = _foreign(tmp_path, "model.onnx", content)
    with pytest.raises(
        ValueError, match=rf"Expected a loadable onnx model.*Received: path='{path}'"
    ):
        _load_runner()(str(path))


def test_lambda_layer_refused_under_safe_mode(tmp_path):
    path = _lambda_file(tmp_path)
    with pytest.raises(ValueError, match="Lambda.*--unsafe-deserialization"):
        _load_runner()(str(path))
    # The explicit opt-in loads it, in kdkeras as in Keras.
    runner = _load_runner()(str(path), safe_mode=False)
    model = keras.models.load_model(path, safe_mode=False)
    assert model.predict(np.ones((1, 8), "float32"), verbose=0).shape == (1, 4)
    assert runner is not None


def test_cli_unsafe_deserialization_is_the_opt_in(tmp_path, capsys):
    path = _lambda_file(tmp_path)
    out = tmp_path / "out"
    code, err = _cli(["export", str(path), "--format", "keras", "--out", str(out)], capsys)
    assert code == 1 and "--unsafe-deserialization" in err
    code, err = _cli(
        ["export", str(path), "--format", "keras", "--out", str(out), "--unsafe-deserialization"],
        capsys,
    )
    assert code == 0, err
    assert (out / "lambda.keras").is_file()


# --------------------------------------------------------------- CLI


def _cli(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize("kind", ["truncated", "foreign", "lambda", "missing"])
def test_cli_bad_model_file_one_line(kind, keras_file, tmp_path, capsys):
    path = {
        "truncated": lambda: _truncated(keras_file, tmp_path),
        "foreign": lambda: _foreign(tmp_path, "foreign.keras"),
        "lambda": lambda: _lambda_file(tmp_path),
        "missing": lambda: tmp_path / "missing.keras",
    }[kind]()
    code, err = _cli(
        ["export", str(path), "--format", "keras", "--out", str(tmp_path / "out")], capsys
    )
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("kdkeras: error: ")
    assert str(path.name) in lines[0]
    assert "Traceback" not in err


def test_cli_bad_onnx_file_one_line(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    path = _foreign(tmp_path, "model.onnx")
    code, err = _cli(["bench", str(path), "--data", "digits"], capsys)
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("kdkeras: error: "), err


def test_cli_debug_shows_the_exception(keras_file, tmp_path):
    path = _truncated(keras_file, tmp_path)
    with pytest.raises(ValueError, match="Expected a Keras model file"):
        cli.main(
            ["--debug", "export", str(path), "--format", "keras", "--out", str(tmp_path / "o")]
        )
