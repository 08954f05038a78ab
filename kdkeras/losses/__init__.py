"""Distillation terms: pure `keras.ops` functions and thin classes."""

from kdkeras.losses.base import DistillationLoss
from kdkeras.losses.base import WrongTypeError
from kdkeras.losses.base import is_finite_number
from kdkeras.losses.base import reduce_per_sample
from kdkeras.losses.base import reduce_per_token
from kdkeras.losses.base import token_count
from kdkeras.losses.contrastive import CRD
from kdkeras.losses.contrastive import ContrastMemory
from kdkeras.losses.contrastive import crd_loss
from kdkeras.losses.contrastive import nce_loss
from kdkeras.losses.feature import AttentionTransfer
from kdkeras.losses.feature import FeatureDistillation
from kdkeras.losses.feature import attention_map
from kdkeras.losses.feature import attention_transfer_loss
from kdkeras.losses.feature import hint_loss
from kdkeras.losses.feature_relational import PKT
from kdkeras.losses.feature_relational import RKD
from kdkeras.losses.feature_relational import SimilarityPreserving
from kdkeras.losses.feature_relational import pkt_loss
from kdkeras.losses.feature_relational import rkd_angle_loss
from kdkeras.losses.feature_relational import rkd_distance_loss
from kdkeras.losses.feature_relational import similarity_preserving_loss
from kdkeras.losses.logits import DIST
from kdkeras.losses.logits import DKD
from kdkeras.losses.logits import LogitsDistillation
from kdkeras.losses.logits import dist_loss
from kdkeras.losses.logits import dkd_loss
from kdkeras.losses.logits import ensemble_logits
from kdkeras.losses.logits import kd_loss
from kdkeras.losses.logits import soft_cross_entropy
from kdkeras.losses.logits import standardize_logits
from kdkeras.losses.tokens import TOP_K_IDS
from kdkeras.losses.tokens import TOP_K_LOG_PROBS
from kdkeras.losses.tokens import GeneralizedJSD
from kdkeras.losses.tokens import SkewKL
from kdkeras.losses.tokens import TokenDistillation
from kdkeras.losses.tokens import TokenDistillationLoss
from kdkeras.losses.tokens import check_vocab_sizes
from kdkeras.losses.tokens import generalized_jsd_loss
from kdkeras.losses.tokens import is_top_k
from kdkeras.losses.tokens import skew_kl_loss
from kdkeras.losses.tokens import token_kl_loss
from kdkeras.losses.tokens import top_k_targets

__all__ = [
    "AttentionTransfer",
    "CRD",
    "ContrastMemory",
    "DIST",
    "DKD",
    "DistillationLoss",
    "FeatureDistillation",
    "GeneralizedJSD",
    "LogitsDistillation",
    "PKT",
    "RKD",
    "SimilarityPreserving",
    "SkewKL",
    "TOP_K_IDS",
    "TOP_K_LOG_PROBS",
    "TokenDistillation",
    "TokenDistillationLoss",
    "WrongTypeError",
    "attention_map",
    "attention_transfer_loss",
    "crd_loss",
    "check_vocab_sizes",
    "dist_loss",
    "dkd_loss",
    "ensemble_logits",
    "generalized_jsd_loss",
    "hint_loss",
    "is_finite_number",
    "is_top_k",
    "kd_loss",
    "nce_loss",
    "pkt_loss",
    "reduce_per_sample",
    "reduce_per_token",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "similarity_preserving_loss",
    "skew_kl_loss",
    "soft_cross_entropy",
    "standardize_logits",
    "token_count",
    "token_kl_loss",
    "top_k_targets",
]
