"""Full-size runs, behind the `slow` marker (`make test-slow`, a few minutes)."""

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _means(stdout):
    """`model -> mean test accuracy` from the recipe's Markdown table."""
    means = {}
    for line in stdout.splitlines():
        match = re.match(r"\| (.+?) \| [\d,]+ \| ([\d.]+) ± [\d.]+ \|", line)
        if match:
            means[match.group(1)] = float(match.group(2))
    return means


@pytest.mark.slow
def test_distilled_student_beats_scratch_over_three_seeds():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "recipes/output_kd.py", "--seeds", "3"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    means = _means(result.stdout)
    assert set(means) == {"teacher", "student (scratch)", "student (distilled)"}
    assert means["student (distilled)"] > means["student (scratch)"]
    assert means["teacher"] > means["student (distilled)"]
