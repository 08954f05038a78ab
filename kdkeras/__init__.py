"""kdkeras: knowledge distillation for Keras.

`Distiller`, `LogitsDistillation`, `FeatureDistillation` and
`DistillationLoss` are drop-ins for the names of `keras.distillation`.

The pipeline is one subpackage per stage: `kdkeras.distill` (the
`Distiller`), `kdkeras.losses`, `kdkeras.transfer` (a student from the
teacher's weights), `kdkeras.deploy` (export, int8, benchmark, report), and
`kdkeras.cli` (the `kdkeras` command). `kdkeras.datasets` (offline data),
`kdkeras.models` (reference teacher and students) and
`kdkeras.comparison` (teacher / scratch / distilled runs) serve the demo,
the recipes and the benchmarks; `kdkeras.pipeline` (`distill`: teacher to
deployed student in one call) is the `kdkeras distill` command.

`import kdkeras` registers the Keras-serializable classes (the `Distiller`
and every distillation term), so `keras.saving.load_model` can read a saved
Distiller; the other public names are imported on first use. To add a
public name, add it to `_EXPORTS` (name -> module).
"""

import importlib

from kdkeras import _startup

if _startup.is_command():
    _startup.import_tensorflow_quietly()

# Registers Distiller and the loss classes with Keras's serialization.
from kdkeras import losses  # noqa: E402,F401
from kdkeras.distill import Distiller  # noqa: E402,F401

__version__ = "0.1.0"

# Public name -> module that defines it (a module itself when equal).
_EXPORTS = {
    "AttentionTransfer": "kdkeras.losses",
    "CRD": "kdkeras.losses",
    "DIST": "kdkeras.losses",
    "DKD": "kdkeras.losses",
    "DistillationLoss": "kdkeras.losses",
    "FeatureDistillation": "kdkeras.losses",
    "GeneralizedJSD": "kdkeras.losses",
    "LogitsDistillation": "kdkeras.losses",
    "PKT": "kdkeras.losses",
    "RKD": "kdkeras.losses",
    "SimilarityPreserving": "kdkeras.losses",
    "SkewKL": "kdkeras.losses",
    "TokenDistillation": "kdkeras.losses",
    "callbacks": "kdkeras.distill.callbacks",
    "comparison": "kdkeras.comparison",
    "datasets": "kdkeras.datasets",
    "deploy": "kdkeras.deploy",
    "distill": "kdkeras.distill",
    "enable_multi_worker_fit": "kdkeras.distill",
    "models": "kdkeras.models",
    "pipeline": "kdkeras.pipeline",
    "propose_layer_pairs": "kdkeras.distill",
    "shrink": "kdkeras.transfer",
    "transfer": "kdkeras.transfer",
    "utils": "kdkeras.utils",
}

__all__ = sorted([*_EXPORTS, "Distiller", "__version__", "losses"])


def __getattr__(name):
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'kdkeras' has no attribute {name!r}")
    if module_name.rsplit(".", 1)[-1] == name:
        value = importlib.import_module(module_name)
    else:
        value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
