"""Distillation: the `Distiller` and what its training step needs.

Modules: `distiller` (the `Distiller`), `arguments` (its constructor
arguments checked, saved and restored), `taps` (intermediate outputs during
the single forward pass), `layer_pairs` (`propose_layer_pairs`), `adapters`
(student features mapped to the teacher's shapes), `teacher_cache` (teacher
outputs computed once), `data_checks` (bad input caught before `fit`),
`indices` (dataset indices carried with the samples, for terms with
per-sample state), `terms` (building, calling and gathering the terms in
the training step), `callbacks` (`BackupAndRestore`, `HistoryLog`,
`TerminateOnNonFinite`, `Schedule`, `Warmup`), `views` (augmentation and
mixup applied once for both models), `sequences` (padding masks, token
counts, unlabeled weights), `on_policy` (student-written sequences for
on-policy distillation), `multiworker` (the `MultiWorkerMirroredStrategy`
fix), `recipes` (named settings of `kdkeras distill`: `RECIPES`, `build`).

Imports `kdkeras.losses` and `kdkeras.utils`; never `kdkeras.deploy` or
`kdkeras.transfer`.
"""

from kdkeras.distill import callbacks
from kdkeras.distill import recipes
from kdkeras.distill.adapters import make_adapter
from kdkeras.distill.callbacks import BackupAndRestore
from kdkeras.distill.callbacks import HistoryLog
from kdkeras.distill.callbacks import Schedule
from kdkeras.distill.callbacks import TerminateOnNonFinite
from kdkeras.distill.callbacks import Warmup
from kdkeras.distill.data_checks import check_finite
from kdkeras.distill.distiller import Distiller
from kdkeras.distill.indices import INDICES_KEY
from kdkeras.distill.indices import INPUTS_KEY
from kdkeras.distill.indices import with_indices
from kdkeras.distill.layer_pairs import propose_layer_pairs
from kdkeras.distill.multiworker import enable_multi_worker_fit
from kdkeras.distill.on_policy import sample_continuations
from kdkeras.distill.taps import find_layer

__all__ = [
    "BackupAndRestore",
    "INDICES_KEY",
    "INPUTS_KEY",
    "Distiller",
    "HistoryLog",
    "Schedule",
    "TerminateOnNonFinite",
    "Warmup",
    "callbacks",
    "check_finite",
    "enable_multi_worker_fit",
    "find_layer",
    "make_adapter",
    "propose_layer_pairs",
    "recipes",
    "sample_continuations",
    "with_indices",
]
