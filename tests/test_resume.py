"""Resuming a distillation run killed mid-epoch (SIGKILL) from its backup."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from _worker_env import worker_env

pytestmark = pytest.mark.subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_resume_worker.py")
TIMEOUT_S = 120


def _run(out, backup, *extra):
    os.makedirs(out, exist_ok=True)
    return subprocess.run(
        [sys.executable, WORKER, str(out), str(backup), *extra],
        env=worker_env(),
        capture_output=True,
        timeout=TIMEOUT_S,
    )


def test_killed_run_resumes_from_last_epoch_and_matches(tmp_path):
    backup = tmp_path / "backup"
    killed = _run(tmp_path / "killed", backup, "--kill-epoch", "1", "--kill-step", "2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    # Epoch 0 completed and was backed up; epoch 1 was cut short.
    state = json.loads((backup / "training_state.json").read_text())
    assert state["epoch"] == 1
    assert (backup / state["weights"]).exists()
    assert not (tmp_path / "killed" / "weights.npy").exists()

    resumed = _run(tmp_path / "resumed", backup)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert json.loads((tmp_path / "resumed" / "epochs.json").read_text()) == [1, 2]
    assert not backup.exists()  # removed once fit completed

    whole = _run(tmp_path / "whole", tmp_path / "backup_whole")
    assert whole.returncode == 0, whole.stderr.decode()[-2000:]
    assert json.loads((tmp_path / "whole" / "epochs.json").read_text()) == [0, 1, 2]

    np.testing.assert_allclose(
        np.load(tmp_path / "resumed" / "weights.npy"),
        np.load(tmp_path / "whole" / "weights.npy"),
        rtol=0,
        atol=1e-6,
    )
