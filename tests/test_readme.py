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
