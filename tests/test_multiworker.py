"""Distillation under `tf.distribute.MultiWorkerMirroredStrategy`.

Two worker processes on 127.0.0.1 train the same tiny Distiller (teacher
online, then from cached teacher outputs); see tests/_mw_worker.py.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from _worker_env import worker_env  # noqa: E402

from kdkeras.distill import multiworker as _multiworker

pytestmark = pytest.mark.subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_mw_worker.py")
TIMEOUT_S = 150


def _run_workers(out, workers=2):
    procs = []
    for index, config in enumerate(_multiworker.local_tf_configs(workers)):
        log = open(os.path.join(out, f"worker_{index}.log"), "wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, WORKER, str(out)],
                env=worker_env(config),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        codes = [p.wait(timeout=TIMEOUT_S) for p in procs]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    logs = {
        i: open(os.path.join(out, f"worker_{i}.log"), errors="replace").read()[-3000:]
        for i in range(workers)
    }
    assert codes is not None, f"workers ran past {TIMEOUT_S} s:\n{logs}"
    assert codes == [0] * workers, f"exit codes {codes}:\n{logs}"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("multiworker")
    _run_workers(out)
    single = subprocess.run(
        [sys.executable, WORKER, str(out), "--single"],
        env=worker_env(),
        capture_output=True,
        timeout=TIMEOUT_S,
    )
    assert single.returncode == 0, single.stderr.decode(errors="replace")[-3000:]
    return out


@pytest.mark.parametrize("mode", ["online", "cached"])
def test_workers_agree_bit_for_bit(results, mode):
    w0 = np.load(results / f"{mode}_0.npy")
    w1 = np.load(results / f"{mode}_1.npy")
    np.testing.assert_array_equal(w0, w1)


@pytest.mark.parametrize("mode", ["online", "cached"])
def test_workers_match_single_device_on_the_global_batch(results, mode):
    multi = np.load(results / f"{mode}_0.npy")
    single = np.load(results / f"{mode}_single.npy")
    initial = np.load(results / "initial_single.npy")
    # Training moved the weights, so agreement is not trivial.
    assert np.max(np.abs(single - initial)) > 1e-2
    np.testing.assert_allclose(multi, single, rtol=0, atol=1e-5)
    loss_multi = np.load(results / f"{mode}_0_loss.npy")
    loss_single = np.load(results / f"{mode}_single_loss.npy")
    np.testing.assert_allclose(loss_multi, loss_single, rtol=1e-5)


def test_cached_run_matches_online_run(results):
    np.testing.assert_allclose(
        np.load(results / "cached_single.npy"),
        np.load(results / "online_single.npy"),
        rtol=0,
        atol=1e-6,
    )


def test_version_guard():
    assert _multiworker.is_affected_keras((3, 15))
    assert _multiworker.is_affected_keras((3, 0))
    assert not _multiworker.is_affected_keras((2, 15))
    assert not _multiworker.is_affected_keras(_multiworker.AFFECTED_KERAS[1])


def test_fix_leaves_other_strategies_alone():
    import keras
    import tensorflow as tf

    was_installed = _multiworker.is_enabled()
    try:
        installed = _multiworker.enable_multi_worker_fit()
        assert installed == _multiworker.is_affected_keras()
        assert _multiworker.enable_multi_worker_fit() == installed  # idempotent
        strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        x = np.ones((8, 3), "float32")
        history = model.fit(x, np.zeros((8, 2), "float32"), batch_size=4, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        assert not _multiworker.is_multi_worker(strategy)
    finally:
        if not was_installed:
            _multiworker.disable_multi_worker_fit()


def test_multiworker_recipe_smoke(tmp_path):
    recipe = os.path.join(os.path.dirname(HERE), "recipes", "multiworker_kd.py")
    result = subprocess.run(
        [sys.executable, recipe, "--smoke", "--workers", "2", "--out", str(tmp_path)],
        env=worker_env(),
        capture_output=True,
        timeout=240,
    )
    output = result.stdout.decode(errors="replace")
    assert result.returncode == 0, output[-2000:] + result.stderr.decode(errors="replace")[-3000:]
    # The workers share one stdout pipe: find each worker's report anywhere in
    # it, even when another process's partial line sits in front of it.
    checksums = dict(re.findall(r"(worker \d+): .*?weight checksum (\S+)", output))
    assert set(checksums) == {"worker 0", "worker 1"}, output[-3000:]
    assert len(set(checksums.values())) == 1  # bit-identical students
    assert (tmp_path / "student.keras").exists()
