"""Distillation terms: pure `keras.ops` functions and thin classes."""

from kdkeras.losses.base import DistillationLoss, reduce_per_sample
from kdkeras.losses.feature import FeatureDistillation
from kdkeras.losses.logits import (
    DIST,
    DKD,
    LogitsDistillation,
    dist_loss,
    dkd_loss,
    ensemble_logits,
    kd_loss,
    soft_cross_entropy,
)

__all__ = sorted(
    [
        "DIST",
        "DKD",
        "DistillationLoss",
        "FeatureDistillation",
        "LogitsDistillation",
        "dist_loss",
        "dkd_loss",
        "ensemble_logits",
        "kd_loss",
        "reduce_per_sample",
        "soft_cross_entropy",
    ]
)
