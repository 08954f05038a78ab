"""The demo command and the output-distillation recipe, run as a user would."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def _run(run_python):
    return lambda args, timeout=300: run_python(args, timeout=timeout)


def test_demo_smoke_writes_table_and_a_plain_keras_student(tmp_path, _run):
    out = tmp_path / "demo"
    result = _run(["-m", "kdkeras.cli", "demo", "--smoke", "--out", str(out)])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| student (distilled) |" in result.stdout
    rows = json.loads((out / "distillation.json").read_text())
    assert [r["model"] for r in rows] == ["teacher", "student (scratch)", "student (distilled)"]
    assert rows[0]["params"] > 5 * rows[2]["params"]
    for row in rows:
        assert 0.0 <= row["test_accuracy"] <= 1.0
    assert rows[0]["teacher_agreement"] == 1.0
    assert "| model | params |" in (out / "distillation.md").read_text()
    deploy = out / "deploy"
    for name in ("teacher.onnx", "student.onnx", "student.int8.onnx", "report.md", "bench.json"):
        assert (deploy / name).is_file(), name
    manifest = json.loads((deploy / "student.onnx.manifest.json").read_text())
    assert manifest["parity"]["passed"] is True
    student = keras.saving.load_model(out / "student.keras")
    assert student.count_params() == rows[2]["params"]
    x = np.zeros((2, 28, 28, 1), "float32")
    assert student(x).shape == (2, 10)


def test_demo_bad_argument_is_one_line_and_nonzero(tmp_path, _run):
    result = _run(["-m", "kdkeras.cli", "demo", "--epochs", "0", "--out", str(tmp_path)])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "kdkeras: error: Expected --epochs >= 1. Received: 0"
    ]
    result = _run(["-m", "kdkeras.cli", "demo", "--data", "cifar", "--out", str(tmp_path)])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "Received: name='cifar'" in result.stderr


def test_output_kd_recipe_smoke(tmp_path, _run):
    backup = tmp_path / "backup"
    result = _run(["recipes/output_kd.py", "--smoke", "--seeds", "2", "--backup-dir", str(backup)])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "gap closed" in result.stdout
    assert "| student (distilled) | 203,530 |" in result.stdout
    # One backup per training; a rerun restores them instead of training.
    assert sorted(p.name for p in backup.iterdir()) == [
        f"seed{s}-{name}" for s in (0, 1) for name in ("distilled", "scratch", "teacher")
    ]
    again = _run(["recipes/output_kd.py", "--smoke", "--seeds", "2", "--backup-dir", str(backup)])
    assert again.returncode == 0, again.stderr[-2000:]

    def seed_lines(out):
        return [line for line in out.splitlines() if line.startswith("seed ")]

    assert seed_lines(again.stdout) == seed_lines(result.stdout)
    # Restored, not retrained: no epoch ran, so no epoch time.
    teacher_row = next(line for line in again.stdout.splitlines() if line.startswith("| teacher |"))
    assert teacher_row.endswith("| - |")


def test_errors_are_one_line_in_a_bare_environment(tmp_path):
    # No TF_CPP_MIN_LOG_LEVEL or other settings: what a user's shell has.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    for args in (
        ["export", str(tmp_path / "missing.keras"), "--out", str(tmp_path / "o")],
        ["export", str(tmp_path / "missing.keras")],  # usage error: no --out
        ["bench", "x.onnx", "--data", "digits", "--calls", "0"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "kdkeras.cli", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 1, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and ": error: " in lines[0], (args, result.stderr)
