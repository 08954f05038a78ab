"""Distillation terms: pure `keras.ops` functions and thin classes."""

from kdkeras.losses.base import DistillationLoss, reduce_per_sample
from kdkeras.losses.feature import (
    AttentionTransfer,
    FeatureDistillation,
    attention_map,
    attention_transfer_loss,
    hint_loss,
)
from kdkeras.losses.feature_relational import (
    PKT,
    RKD,
    SimilarityPreserving,
    pkt_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    similarity_preserving_loss,
)
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
        "AttentionTransfer",
        "DIST",
        "DKD",
        "DistillationLoss",
        "FeatureDistillation",
        "LogitsDistillation",
        "PKT",
        "RKD",
        "SimilarityPreserving",
        "attention_map",
        "attention_transfer_loss",
        "dist_loss",
        "dkd_loss",
        "ensemble_logits",
        "hint_loss",
        "kd_loss",
        "pkt_loss",
        "reduce_per_sample",
        "rkd_angle_loss",
        "rkd_distance_loss",
        "similarity_preserving_loss",
        "soft_cross_entropy",
    ]
)
