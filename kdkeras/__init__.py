"""kdkeras: knowledge distillation for Keras.

`Distiller`, `LogitsDistillation`, `FeatureDistillation` and
`DistillationLoss` are drop-ins for the names of `keras.distillation`.
"""

from kdkeras import callbacks
from kdkeras import checks
from kdkeras import datasets
from kdkeras import losses
from kdkeras._multiworker import enable_multi_worker_fit
from kdkeras.distiller import Distiller
from kdkeras.losses import AttentionTransfer
from kdkeras.losses import DIST
from kdkeras.losses import DKD
from kdkeras.losses import DistillationLoss
from kdkeras.losses import FeatureDistillation
from kdkeras.losses import LogitsDistillation
from kdkeras.losses import PKT
from kdkeras.losses import RKD
from kdkeras.losses import SimilarityPreserving
from kdkeras.taps import propose_layer_pairs

__version__ = "0.1.0"

__all__ = sorted(
    [
        "AttentionTransfer",
        "DIST",
        "DKD",
        "DistillationLoss",
        "Distiller",
        "FeatureDistillation",
        "LogitsDistillation",
        "PKT",
        "RKD",
        "SimilarityPreserving",
        "__version__",
        "callbacks",
        "checks",
        "datasets",
        "enable_multi_worker_fit",
        "losses",
        "propose_layer_pairs",
    ]
)
