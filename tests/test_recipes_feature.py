import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run(run_python):
    def run_script(script, *args):
        result = run_python([script, "--smoke", *args])
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    return run_script


def test_feature_kd_smoke(run):
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


def test_feature_step_time_smoke(run):
    out = run("benchmarks/feature_step_time.py")
    assert re.search(r"kdkeras / keras.distillation: [0-9.]+", out)
    assert re.search(r"kdkeras / \(student \+ teacher inference\): [0-9.]+", out)


def test_output_kd_standardize_smoke(run):
    out = run("recipes/output_kd.py", "--seeds", "1", "--standardize")
    assert "| student (distilled, standardized) | 203,530 |" in out
    assert "standardized T=2.0" in out
    assert "gap closed by student (distilled, standardized)" in out
