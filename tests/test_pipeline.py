"""`kdkeras.pipeline.distill` and what it is made of: students from a spec, teacher
files, recipes, stage records, the history log; reruns that resume and skip."""

import json
import os

import keras
import numpy as np
import pytest

import kdkeras
from kdkeras import models
from kdkeras import pipeline
from kdkeras.distill import recipes
from kdkeras.utils import stages as stages_lib


def _tiny_teacher():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu", name="fc"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="teacher",
    )


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A tiny CNN (19k parameters) trained on scikit-learn's digits, saved as .keras."""
    (x, y), _ = kdkeras.datasets.load("digits")
    teacher = _tiny_teacher()
    teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, epochs=5, verbose=0)
    path = tmp_path_factory.mktemp("teacher") / "teacher.keras"
    teacher.save(path)
    return path


# ------------------------------------------------------------ students


@pytest.mark.parametrize(
    "spec, expected",
    [
        (None, ("shrink", None)),
        ("shrink", ("shrink", None)),
        ("shrink:width=0.5,depth=2,rank=8", ("shrink", {"width": 0.5, "depth": 2, "rank": 8})),
        ("shrink:rank=0.9", ("shrink", {"rank": 0.9})),
        ("mlp", ("built-in", "mlp")),
        ("cnn", ("built-in", "cnn")),
        ("my/student.keras", ("file", "my/student.keras")),
    ],
)
def test_student_specs(spec, expected):
    assert models.parse_student(spec) == expected


@pytest.mark.parametrize(
    "spec, match",
    [
        ("resnet", r"Expected --student shrink:.*Received: student='resnet'"),
        ("shrink:size=2", r"keys \['depth', 'params', 'rank', 'scoring', 'width'\]"),
        ("shrink:width=half", r"a number for width"),
    ],
)
def test_bad_student_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        models.parse_student(spec)


def test_default_student_is_about_4x_smaller():
    cnn = models.cnn_teacher()
    student, description = models.build_student(None, cnn)
    assert description == "shrink(width=0.5) of the teacher, chosen for about 4x fewer parameters"
    assert 0.2 < student.count_params() / cnn.count_params() <= models.DEFAULT_STUDENT_SHARE
    assert student.name == "student" and student.trainable
    # An MLP keeps its input layer whole: width 0.5 is not enough, a smaller share is chosen.
    mlp = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(96), keras.layers.Dense(96), keras.layers.Dense(10)]
    )
    student, description = models.build_student(None, mlp)
    assert "width=0.5)" not in description
    assert student.count_params() <= models.DEFAULT_STUDENT_SHARE * mlp.count_params()


def test_student_the_teacher_cannot_be_shrunk_by_names_the_layer():
    with pytest.raises(
        ValueError, match=r"Cannot derive the student.*too small to factorise layer 'conv'"
    ):
        models.build_student("shrink:params=5", _tiny_teacher())


def test_built_in_and_file_students_must_fit_the_teacher(tmp_path):
    teacher = _tiny_teacher()
    student, _ = models.build_student("mlp", teacher)
    assert student.output_shape == (None, 10)
    keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]).save(
        tmp_path / "three.keras"
    )
    with pytest.raises(ValueError, match=r"teacher's output shape \(10,\).*\[\(3,\)\]"):
        models.build_student(str(tmp_path / "three.keras"), teacher)


# ------------------------------------------------------------ teacher files


def test_teacher_files(tmp_path):
    teacher = _tiny_teacher()
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    expected = teacher.predict(x, verbose=0)
    teacher.save(tmp_path / "t.h5")
    teacher.export(tmp_path / "saved", verbose=False)
    for path in (tmp_path / "t.h5", tmp_path / "saved"):
        loaded = models.load_model(path, arg="teacher")
        np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-5)
    assert models.wraps_saved_model(models.load_model(tmp_path / "saved"))
    (tmp_path / "notes.keras").write_text("not a model")
    with pytest.raises(ValueError, match=r"\.keras file, a legacy \.h5 file or a SavedModel"):
        models.load_model(tmp_path / "notes.keras", arg="teacher")
    with pytest.raises(ValueError, match=r"folder without saved_model\.pb"):
        models.load_model(tmp_path, arg="teacher")


# ------------------------------------------------------------ recipes


def test_recommended_is_the_study_setting_with_a_warmed_up_cosine_schedule():
    recommended = recipes.RECIPES["recommended"]
    assert recommended["terms"] == [{"term": "logits", "temperature": 8.0, "weight": 1.0}]
    assert recommended["student_loss_weight"] == 0.5 and recommended["cache_teacher"]
    assert sorted(recipes.RECIPES) == ["dist", "dkd", "feature", "kd", "recommended"]
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    distiller, compile_kwargs, _ = recipes.build(
        "recommended", teacher, student, num_classes=3, epochs=10, steps_per_epoch=10
    )
    assert distiller.distillation_losses[0].temperature == 8.0
    config = compile_kwargs["optimizer"].get_config()["learning_rate"]
    schedule = keras.optimizers.schedules.deserialize(config)
    lr = [float(schedule(step)) for step in (0, 5, 100)]
    assert lr[0] == 0.0 and lr[1] == pytest.approx(2e-3) and lr[2] == pytest.approx(0.0, abs=1e-9)
    assert compile_kwargs["optimizer"].clipnorm == 1.0
    with pytest.raises(ValueError, match=r"recipe in \['dist', .*Received: recipe='fitnets'"):
        recipes.settings("fitnets")


@pytest.mark.parametrize("name", ["dkd", "dist", "feature"])  # kd: the end-to-end tests
def test_every_recipe_trains(name):
    teacher = _tiny_teacher()
    student, _ = models.build_student(None, teacher)
    distiller, compile_kwargs, callbacks = recipes.build(
        name, teacher, student, num_classes=10, epochs=1, steps_per_epoch=2, verbose=False
    )
    kinds = {
        "dkd": ["DKD"],
        "dist": ["DIST"],
        "feature": ["LogitsDistillation", "FeatureDistillation"],
    }[name]
    assert [type(t).__name__ for t in distiller.distillation_losses] == kinds
    distiller.compile(**compile_kwargs)
    x = np.random.default_rng(0).random((32, 8, 8, 1)).astype("float32")
    y = np.arange(32) % 10
    history = distiller.fit(x, y, batch_size=16, verbose=0, callbacks=callbacks)
    assert np.isfinite(history.history["loss"][0])
    if name == "feature":
        assert distiller.adapters[1] is not None  # fc 32 units vs 16: an adapter


# ------------------------------------------------------------ stages, history


def test_stage_file_skips_only_unchanged_stages(tmp_path):
    stages = stages_lib.StageFile(tmp_path / "stages.json")
    out = tmp_path / "a.bin"
    out.write_bytes(b"one")
    assert not stages.is_done("export", {"opset": 17})
    stages.mark_done("export", {"opset": 17}, [out], seconds=1.5)
    assert stages.is_done("export", {"opset": 17})
    assert stages.record("export")["seconds"] == 1.5
    assert not stages.is_done("export", {"opset": 18})
    out.write_bytes(b"two")  # the file changed since
    assert not stages.is_done("export", {"opset": 17})


def test_history_log_keeps_earlier_epochs_and_replaces_retrained_ones(tmp_path):
    path = tmp_path / "history.json"
    log = kdkeras.callbacks.HistoryLog(path)
    for epoch in range(3):
        log.on_epoch_end(epoch, {"loss": 3.0 - epoch, "val_loss": np.float32(4.0)})
    resumed = kdkeras.callbacks.HistoryLog(path)  # a new process, after a crash
    resumed.on_epoch_end(2, {"loss": 0.5})  # epoch 2 ran again
    assert resumed.history == {"loss": [3.0, 2.0, 0.5], "val_loss": [4.0, 4.0, None]}


# ------------------------------------------------------------ distill


def _mtimes(folder, names):
    return {n: os.stat(folder / n).st_mtime_ns for n in names}


def test_distill_writes_everything_and_reruns_only_what_changed(
    teacher_file, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    result = pipeline.distill(teacher_file, "digits", out, smoke=True, epochs=1, verbose=0)
    assert result.stages == {"train": "ran", "export": "ran", "quantize": "ran", "bench": "ran"}
    assert [r["model"] for r in result.rows] == ["teacher", "student", "student int8"]
    teacher_row, student_row, int8_row = result.rows
    assert 3.0 < teacher_row["params"] / student_row["params"] < 5.0
    assert teacher_row["teacher agreement"] == 1.0
    assert 0.0 <= student_row["test accuracy"] <= 1.0
    assert int8_row["size KB"] < student_row["size KB"]
    artifacts = ["student.keras", "teacher.onnx", "student.onnx", "student.int8.onnx"]
    for name in artifacts + ["results.json", "report.md", "bench.png", "curves.png"]:
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    assert saved["models"] == json.loads(json.dumps(result.rows))
    assert saved["settings"]["recipe_settings"] == recipes.RECIPES["recommended"]
    assert saved["settings"]["n_train"] == 256 and saved["versions"]["keras"] == keras.version()
    assert saved["parity"]["student.onnx"]["passed"] is True
    assert len(saved["history"]["loss"]) == 1
    report = (out / "report.md").read_text()
    assert "![training curves](curves.png)" in report and "| student int8 |" in report
    assert keras.saving.load_model(out / "student.keras").count_params() == student_row["params"]

    before = _mtimes(out, artifacts)
    again = pipeline.distill(teacher_file, "digits", out, smoke=True, epochs=1, verbose=0)
    assert set(again.stages.values()) == {"skipped (finished earlier with the same inputs)"}
    assert _mtimes(out, artifacts) == before
    assert again.rows == result.rows

    dynamic = pipeline.distill(
        teacher_file, "digits", out, smoke=True, epochs=1, quantize="dynamic", verbose=0
    )
    assert dynamic.stages["train"].startswith("skipped")
    assert dynamic.stages["export"].startswith("skipped")
    assert dynamic.stages["quantize"] == "ran"
    assert _mtimes(out, artifacts[:3]) == {k: before[k] for k in artifacts[:3]}

    # A failed int8 gate is a note, not an error; the earlier int8 file goes.
    def failing_gate(*args, **kwargs):
        raise kdkeras.deploy.ParityError("Parity check failed: agreement=0.5 (min 0.99)")

    monkeypatch.setattr(kdkeras.deploy, "quantize", failing_gate)
    failed = pipeline.distill(teacher_file, "digits", out, smoke=True, epochs=1, verbose=0)
    monkeypatch.undo()
    assert [r["model"] for r in failed.rows] == ["teacher", "student"]
    assert failed.notes[0].startswith("no int8 student: its agreement gate failed (Parity")
    assert not (out / "student.int8.onnx").exists()
    assert not (out / "student.int8.onnx.manifest.json").exists()

    # One more epoch continues from the backup; the history keeps the first.
    longer = pipeline.distill(teacher_file, "digits", out, smoke=True, epochs=2, verbose=0)
    assert longer.stages["train"] == "ran" and longer.stages["export"] == "ran"
    assert len(longer.history["loss"]) == 2
    assert longer.history["loss"][0] == result.history["loss"][0]

    # Fewer epochs than the backup holds: training starts over.
    capsys.readouterr()
    shorter = pipeline.distill(teacher_file, "digits", out, smoke=True, epochs=1, quantize=None)
    assert "holds 2 epochs, more than the 1 asked for; starting over" in capsys.readouterr().out
    assert len(shorter.history["loss"]) == 1 and shorter.stages["train"] == "ran"


def test_saved_model_teacher_teaches_but_cannot_be_shrunk(teacher_file, tmp_path):
    saved = tmp_path / "saved_teacher"
    keras.saving.load_model(teacher_file).export(saved, verbose=False)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"SavedModel teacher .* cannot be shrunk.*--student"):
        pipeline.distill(saved, "digits", out, smoke=True, epochs=1, verbose=0)
    assert not out.exists()
    result = pipeline.distill(
        saved, "digits", out, student="cnn", smoke=True, epochs=1, quantize=None, verbose=0
    )
    assert [r["model"] for r in result.rows] == ["teacher", "student"]
    assert result.stages["quantize"] == "not asked (--quantize none)"
    assert not (out / "student.int8.onnx").exists()
