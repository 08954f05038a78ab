"""kdkeras: knowledge distillation for Keras.

`Distiller`, `LogitsDistillation`, `FeatureDistillation` and
`DistillationLoss` are drop-ins for the names of `keras.distillation`.

Public names are imported on first use, so `import kdkeras` (and the
`kdkeras` command's start-up) does not load TensorFlow until it is needed.
To add a public name, add it to `_EXPORTS` (name -> module).
"""

import importlib

__version__ = "0.1.0"

# Public name -> module that defines it (a module itself when equal).
_EXPORTS = {
    "AttentionTransfer": "kdkeras.losses",
    "DIST": "kdkeras.losses",
    "DKD": "kdkeras.losses",
    "DistillationLoss": "kdkeras.losses",
    "Distiller": "kdkeras.distiller",
    "FeatureDistillation": "kdkeras.losses",
    "LogitsDistillation": "kdkeras.losses",
    "PKT": "kdkeras.losses",
    "RKD": "kdkeras.losses",
    "SimilarityPreserving": "kdkeras.losses",
    "bench": "kdkeras.bench",
    "callbacks": "kdkeras.callbacks",
    "checks": "kdkeras.checks",
    "datasets": "kdkeras.datasets",
    "enable_multi_worker_fit": "kdkeras._multiworker",
    "experiments": "kdkeras.experiments",
    "export": "kdkeras.export",
    "losses": "kdkeras.losses",
    "propose_layer_pairs": "kdkeras.taps",
    "quantize": "kdkeras.quantize",
    "report": "kdkeras.report",
    "shrink": "kdkeras.transfer",
    "transfer": "kdkeras.transfer",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name):
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'kdkeras' has no attribute {name!r}")
    if module_name == f"kdkeras.{name}":
        value = importlib.import_module(module_name)
    else:
        value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
