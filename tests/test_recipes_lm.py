import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parents[1]


def test_lm_kd_smoke(tmp_path):
    pytest.importorskip("keras_hub")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    result = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "lm_kd.py"), "--smoke", "--seeds", "1",
         "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    rows = re.findall(r"^\| student, (.+?) \| [0-9,]+ \| ([0-9.]+) ± ([0-9.]+) \|", out, re.M)
    assert [r[0] for r in rows] == ["labels only", "forward KL", "reverse KL", "JSD (beta=0.5)"]
    for _, mean, _ in rows:
        assert 0.0 < float(mean) <= 8.0 + 1e-6  # bits per byte: 8 is a uniform guess
    # The exported student passed the parity gate, takes another length,
    # and its logits at a position never see later bytes.
    assert re.search(
        r"^student\.onnx: parity max_abs_diff=[0-9.e+-]+, agreement=1\.0000", out, re.M
    )
    assert "'shape': [None, None]" in out
    match = re.search(
        r"at length 8: max_abs_diff=([0-9.e+-]+); causal: max change ([0-9.e+-]+)", out
    )
    assert match and float(match.group(1)) < 1e-4 and float(match.group(2)) == 0.0
    assert (tmp_path / "onnx" / "student.onnx").exists()
    assert (tmp_path / "lm_kd.md").exists() and (tmp_path / "lm_kd.json").exists()
    assert re.search(r"^\| top-4 \| 32 \|", out, re.M)
