"""kdkeras: knowledge distillation for Keras.

`Distiller`, `LogitsDistillation`, `FeatureDistillation` and
`DistillationLoss` are drop-ins for the names of `keras.distillation`.

`import kdkeras` registers the Keras-serializable classes (the `Distiller`
and every distillation term), so `keras.saving.load_model` can read a saved
Distiller; the other public names (export, bench, transfer, ...) are
imported on first use. To add a public name, add it to `_EXPORTS`
(name -> module).
"""

import importlib

from kdkeras import _startup

if _startup.is_command():
    _startup.import_tensorflow_quietly()

# Registers Distiller and the loss classes with Keras's serialization.
from kdkeras import distiller as _distiller  # noqa: E402,F401
from kdkeras import losses as _losses  # noqa: E402,F401

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
