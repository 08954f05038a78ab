"""Environment for the worker processes that tests start (multi-worker, resume)."""

import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker_env(tf_config=None):
    """This process's environment for a CPU-only TensorFlow worker.

    Any inherited `TF_CONFIG` is dropped; `tf_config` (a dict), when given,
    becomes the worker's own. The repository root is put on `PYTHONPATH`.
    """
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    env.update(
        KERAS_BACKEND="tensorflow",
        TF_CPP_MIN_LOG_LEVEL="3",
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]),
    )
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env
