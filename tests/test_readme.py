"""The README's quick start runs as written (with fewer epochs)."""

import os
import re
import subprocess
import sys

import keras
import pytest

pytestmark = pytest.mark.subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quick_start_code():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme.split("## Quick start", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_quick_start_is_short_and_uses_public_names_only():
    code = quick_start_code()
    assert len(code.strip().splitlines()) <= 15
    assert "kdkeras._" not in code and "from kdkeras." not in code


def test_quick_start_runs(tmp_path):
    code = re.sub(r"epochs=\d+", "epochs=1", quick_start_code())
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    student = keras.saving.load_model(tmp_path / "student.keras")
    assert student.count_params() == 203_530
    assert (tmp_path / "student.onnx").is_file()
    assert (tmp_path / "student.onnx.manifest.json").is_file()


def distill_example():
    """The teacher script and the `kdkeras distill` command of "Two commands"."""
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme.split("## Two commands", 1)[1].split("## Quick start", 1)[0]
    block = re.search(
        r"```sh\npython - <<'EOF'\n(.*?)\nEOF\n(kdkeras distill .*?)\n```", section, re.S
    )
    return block.group(1), block.group(2)


@pytest.mark.slow
def test_distill_example_runs(tmp_path):
    import shlex

    script, command = distill_example()
    assert "--data mnist-5k" in command and "cnn_teacher()" in script
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    script = re.sub(r"epochs=\d+", "epochs=1", script)
    made = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr[-3000:]
    args = shlex.split(re.sub(r"--epochs \d+", "--epochs 1", command))[1:] + ["--smoke"]
    result = subprocess.run(
        [sys.executable, "-m", "kdkeras.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| student int8 | student.int8.onnx | 300,490 |" in result.stdout
    assert (tmp_path / "distill_output" / "report.md").is_file()
