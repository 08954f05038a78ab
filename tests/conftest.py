import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402

# Two logical CPU devices, so MirroredStrategy tests run on one machine.
# Must happen before TensorFlow initialises its devices.
_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0],
        [tf.config.LogicalDeviceConfiguration()] * 2,
    )
except RuntimeError:  # devices already initialised by an earlier import
    pass

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_policy():
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One `MirroredStrategy` on the two logical CPUs, shared by every test.

    TensorFlow keys its collective ops by strategy-local counters: a second
    `MirroredStrategy` in the same process reuses the first one's keys, and
    collectives of different shapes then fail ("Shape mismatch in the
    collective instance"), with plain Keras models too.
    """
    devices = tf.config.list_logical_devices("CPU")
    assert len(devices) >= 2, "conftest configures two logical CPU devices"
    return tf.distribute.MirroredStrategy([d.name for d in devices[:2]])


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_python(args, timeout=600, env=None, cwd=ROOT):
    """Runs `python ARGS` from the repository root, quietly, as a user would."""
    import subprocess
    import sys

    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", **(env or {}))
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def run_python():
    """`run_python(args, timeout=600, env=None, cwd=ROOT)`: a child Python process's result."""
    return _run_python
