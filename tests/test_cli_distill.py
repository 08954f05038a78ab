"""`kdkeras distill`, run as a user would: built-in data, an .npz file, a folder of
PNG images, a legacy .h5 teacher, unlabeled data, a run killed and rerun, and
every bad input as one line with exit status 1 and nothing written.

Most runs call the command's entry point in this process (`kdkeras.cli.main`);
the resume test starts real processes and kills one with SIGKILL.
"""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from _worker_env import worker_env

import kdkeras
from kdkeras import cli


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """A tiny CNN (19k parameters) trained on digits, as .keras and legacy .h5."""
    (x, y), _ = kdkeras.datasets.load("digits")
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu", name="fc"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="teacher",
    )
    teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, epochs=5, verbose=0)
    folder = tmp_path_factory.mktemp("teachers")
    teacher.save(folder / "teacher.keras")
    teacher.save(folder / "teacher.h5")
    return folder


def _distill(args, capsys):
    code = cli.main(["distill", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _table(out):
    return [line for line in out.splitlines() if line.startswith("| ")]


def _npz(path, n=300, test=None, labels=True, **extra):
    (x, y), (xt, yt) = kdkeras.datasets.load("digits")
    arrays = {"x_train": x[:n]}
    if labels:
        arrays["y_train"] = y[:n]
    if test:
        arrays.update(x_test=xt[:test], y_test=yt[:test])
    arrays.update(extra)
    np.savez(path, **arrays)
    return path


def _png_folder(root, classes=("0_zero", "1_one", "2_two"), n=20):
    """Digits 0, 1, 2 upscaled to 16x16 PNGs, one sub-folder per class (sorted = label)."""
    import tensorflow as tf

    (x, y), _ = kdkeras.datasets.load("digits")
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i, image in enumerate(x[y == label][:n]):
            big = np.kron(image, np.ones((2, 2, 1)))  # 8x8 -> 16x16
            pixels = (big * 255).round().astype(np.uint8)
            (root / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    return root


# ------------------------------------------------------------ end to end


def test_builtin_dataset(teachers, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = _distill(
        [teachers / "teacher.keras", "--data", "digits", "--out", out, "--smoke"], capsys
    )
    assert code == 0, err
    table = _table(stdout)
    assert table[0].startswith("| model | file | params | size KB | test accuracy |")
    assert [row.split(" | ")[0] for row in table[1:]] == [
        "| teacher",
        "| student",
        "| student int8",
    ]
    assert "Epoch 2/2" in stdout  # Keras's own progress bar, --smoke's 2 epochs
    assert "Student: shrink(width=0.5) of the teacher" in stdout
    assert "Stages: train: ran; export: ran; quantize: ran; bench: ran" in stdout
    assert "Took " in stdout
    for name in ("student.keras", "student.onnx", "student.int8.onnx", "teacher.onnx"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert results["command"].startswith("kdkeras distill ") and "--smoke" in results["command"]
    assert results["settings"]["data"] == "digits" and results["settings"]["epochs"] == 2
    assert results["quantization"]["student.int8.onnx"]["mode"] == "static"
    report = (out / "report.md").read_text()
    assert "curves.png" in report and "bench.png" in report and "kdkeras distill" in report


def test_npz_file_and_legacy_h5_teacher(teachers, tmp_path, capsys):
    data = _npz(tmp_path / "digits.npz", n=300, test=100)
    out = tmp_path / "out"
    args = [teachers / "teacher.h5", "--data", data, "--out", out, "--smoke", "--epochs", "1"]
    code, stdout, err = _distill([*args, "--quantize", "dynamic"], capsys)
    assert code == 0, err
    assert "Teacher: " in stdout and "teacher.h5" in stdout
    assert "x_test and y_test of the file: 300 train / 100 test" in stdout
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["n_test"] == 100  # --smoke keeps up to 128
    assert results["quantization"]["student.int8.onnx"]["mode"] == "dynamic"


def test_folder_of_png_images(teachers, tmp_path, capsys):
    images = _png_folder(tmp_path / "images")
    out = tmp_path / "out"
    args = [teachers / "teacher.keras", "--data", images, "--out", out, "--epochs", "1"]
    code, stdout, err = _distill([*args, "--student", "mlp", "--quantize", "none"], capsys)
    assert code == 0, err
    assert "48 train / 12 test; classes 0_zero=0, 1_one=1, 2_two=2" in stdout
    assert "pixels resized to 8x8" in stdout
    assert [row.split(" | ")[0] for row in _table(stdout)[1:]] == ["| teacher", "| student"]
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["class_names"] == ["0_zero", "1_one", "2_two"]
    # The teacher knows these digits: upscaled and resized back, they stay readable.
    assert results["models"][0]["test accuracy"] > 0.8
    assert not (out / "student.int8.onnx").exists()


def test_unlabeled_data(teachers, tmp_path, capsys):
    data = _npz(tmp_path / "unlabeled.npz", n=300, labels=False)
    out = tmp_path / "out"
    args = [teachers / "teacher.keras", "--data", data, "--out", out, "--smoke", "--epochs", "1"]
    code, stdout, err = _distill([*args, "--quantize", "none"], capsys)
    assert code == 0, err
    assert "no labels: the student learns from the teacher's outputs alone" in stdout
    for row in _table(stdout)[1:]:
        assert row.split(" | ")[4] == "-"  # test accuracy
    history = json.loads((out / "results.json").read_text())["history"]
    assert "student_loss" not in history and "accuracy" not in history
    assert len(history["teacher_agreement"]) == 1


# ------------------------------------------------------------ bad input


def _foreign(tmp_path):
    path = tmp_path / "foreign.keras"
    path.write_text("this is not a model\n")
    return path


@pytest.mark.parametrize(
    "kind, match",
    [
        ("missing teacher", r"Received: teacher='.*missing\.keras', which does not exist"),
        ("foreign teacher", r"Expected a \.keras file.*Received: teacher='.*foreign\.keras'"),
        ("wrong shape", r"x_train shaped \(samples, 8, 8, 1\).*shape=\(300, 64\)"),
        ("wrong dtype", r"numeric inputs .*Received: x_train with dtype=<U"),
        ("labels outside", r"labels in \[0, 10\).*Received: y_train\[3\]=11"),
        ("empty folder", r"which holds no image"),
        ("student layer", r"too small to factorise layer 'conv'"),
        ("student spec", r"Expected --student .*Received: student='resnet50'"),
        ("recipe", r"Expected a recipe in \[.*Received: recipe='fitnets'"),
    ],
)
def test_bad_input_is_one_line_and_nothing_is_written(kind, match, teachers, tmp_path, capsys):
    teacher, data, extra = teachers / "teacher.keras", "digits", []
    if kind == "missing teacher":
        teacher = tmp_path / "missing.keras"
    elif kind == "foreign teacher":
        teacher = _foreign(tmp_path)
    elif kind == "wrong shape":
        data = _npz(tmp_path / "d.npz", x_train=np.zeros((300, 64), "float32"))
    elif kind == "wrong dtype":
        data = _npz(tmp_path / "d.npz", x_train=np.full((300, 8, 8, 1), "a"))
    elif kind == "labels outside":
        data = _npz(tmp_path / "d.npz", y_train=np.array([1, 2, 3, 11] * 75))
    elif kind == "empty folder":
        data = tmp_path / "images"
        (data / "cats").mkdir(parents=True)
    elif kind == "student layer":
        extra = ["--student", "shrink:params=5"]
    elif kind == "student spec":
        extra = ["--student", "resnet50"]
    else:
        extra = ["--recipe", "fitnets"]
    out = tmp_path / "out"
    code, _, err = _distill([teacher, "--data", data, "--out", out, "--smoke", *extra], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("kdkeras: error: Expected") or "Cannot derive" in lines[0]
    assert re.search(match, lines[0]), lines[0]
    assert not out.exists()


def test_full_disk_during_export_keeps_the_previous_files(teachers, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    args = [teachers / "teacher.keras", "--data", "digits", "--out", out, "--smoke"]
    code, _, err = _distill([*args, "--epochs", "1", "--quantize", "none"], capsys)
    assert code == 0, err
    names = ["teacher.onnx", "student.onnx", "results.json", "report.md", "bench.png"]
    before = {name: (out / name).read_bytes() for name in names}
    exported = json.loads((out / "stages.json").read_text())["export"]

    real_fsync = os.fsync

    def full_disk(fd):
        # Only ONNX files fail: training and its backups still fit on the disk.
        if ".onnx" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    # One more epoch: the student changes, so the export runs again, and fails.
    code, _, err = _distill([*args, "--epochs", "2", "--quantize", "none"], capsys)
    monkeypatch.undo()
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert "No space left on device, in the export stage" in lines[0]
    assert "left as they were" in lines[0]
    assert {name: (out / name).read_bytes() for name in names} == before
    assert [p.name for p in out.iterdir() if ".tmp-" in p.name or ".staging" in p.name] == []
    # The new student is kept (its stage finished); the export is still the old one's,
    # so the next run exports again.
    assert json.loads((out / "stages.json").read_text())["export"] == exported


# ------------------------------------------------------------ resume


@pytest.mark.subprocess
def test_killed_run_resumes_and_then_skips_finished_stages(teachers, tmp_path, capsys):
    out = tmp_path / "out"
    # An .npz file: the child processes skip importing scikit-learn for "digits".
    data = _npz(tmp_path / "digits.npz", n=256, test=128)
    args = [teachers / "teacher.keras", "--data", data, "--out", out, "--smoke"]
    args = [*map(str, args), "--epochs", "8", "--batch-size", "16"]
    command = [sys.executable, "-m", "kdkeras.cli", "distill", *args]
    state = out / "backup" / "training_state.json"
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen(command, env=worker_env(), stdout=log, stderr=log)
        deadline = time.monotonic() + 120
        while not state.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]
    killed_at = json.loads(state.read_text())["epoch"]
    assert 1 <= killed_at < 8
    assert not (out / "student.keras").exists() and not (out / "stages.json").exists()

    resumed = subprocess.run(command, env=worker_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "train: resuming from the backup after epoch " in resumed.stdout
    resumed_from = int(resumed.stdout.split("after epoch ")[1].split()[0])
    assert resumed_from >= killed_at
    assert f"Epoch {resumed_from + 1}/8" in resumed.stdout
    assert "Epoch 1/8" not in resumed.stdout
    history = json.loads((out / "results.json").read_text())["history"]
    assert len(history["loss"]) == 8  # the epochs before the kill are kept

    artifacts = ["student.keras", "teacher.onnx", "student.onnx", "student.int8.onnx"]
    before = {name: os.stat(out / name).st_mtime_ns for name in artifacts}
    code, stdout, err = _distill(args, capsys)  # the same command once more
    assert code == 0, err
    skipped = "skipped (finished earlier with the same inputs)"
    assert f"Stages: train: {skipped}; export: {skipped}; quantize: {skipped}" in stdout
    assert "Epoch " not in stdout
    assert {name: os.stat(out / name).st_mtime_ns for name in artifacts} == before
