import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parents[1]


def run(script, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    result = subprocess.run(
        [sys.executable, str(ROOT / script), "--smoke", *args],
        capture_output=True, text=True, env=env, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_feature_kd_smoke():
    out = run("recipes/feature_kd.py", "--seeds", "1")
    # The student's features differ from the teacher's: FitNets gets an adapter.
    assert re.search(
        r"t_conv4\s+\(14, 14, 32\)\s+s_conv2\s+\(7, 7, 16\)\s+Conv2D 1x1 ->32, UpSample 2x2", out
    )
    rows = re.findall(r"^\| (.+?) \| ([0-9.]+) ± [0-9.]+ \| .+? \| ([0-9.]+) \|$", out, re.M)
    assert [r[0] for r in rows] == [
        "alone", "KD", "KD + FitNets", "KD + AT", "KD + RKD", "KD + PKT", "KD + SP", "KD + CRD",
    ]  # fmt: skip
    for _, accuracy, seconds in rows:
        assert 0.0 <= float(accuracy) <= 1.0 and float(seconds) > 0


def test_feature_step_time_smoke():
    out = run("benchmarks/feature_step_time.py")
    assert re.search(r"kdkeras / keras.distillation: [0-9.]+", out)
    assert re.search(r"kdkeras / \(student \+ teacher inference\): [0-9.]+", out)


def test_output_kd_standardize_smoke():
    out = run("recipes/output_kd.py", "--seeds", "1", "--standardize")
    assert "| student (distilled, standardized) | 203,530 |" in out
    assert "standardized T=2.0" in out
    assert "gap closed by student (distilled, standardized)" in out
