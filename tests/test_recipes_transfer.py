import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parents[1]


def test_transfer_kd_smoke(run_python):
    result = run_python(["recipes/transfer_kd.py", "--smoke", "--seeds", "1"])
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "parameters: 5,130 -> 762" in out
    rows = re.findall(r"^\| (.+?) \| (.+?) \| ([0-9.]+) ± ([0-9.]+) \|$", out, re.M)
    assert [r[0] for r in rows] == [
        "random init + KD",
        "teacher-derived init + KD",
        "teacher-derived init, no training",
        "random init, labels only",
    ]
    for _, _, mean, _ in rows:
        assert 0.0 <= float(mean) <= 1.0
