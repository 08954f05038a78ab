"""Distillation: the `Distiller` and what its training step needs.

Modules: `distiller` (the `Distiller`), `taps` (intermediate outputs during
the single forward pass), `layer_pairs` (`propose_layer_pairs`), `adapters`
(student features mapped to the teacher's shapes), `teacher_cache` (teacher
outputs computed once), `data_checks` (bad input caught before `fit`),
`callbacks` (`BackupAndRestore`, `TerminateOnNonFinite`, `Schedule`, `Warmup`), `views` (augmentation and mixup applied once for both models), `sequences`
(padding masks, token counts, unlabeled weights), `on_policy` (student-written
sequences for on-policy distillation), `multiworker` (the
`MultiWorkerMirroredStrategy` fix).

Imports `kdkeras.losses` and `kdkeras.utils`; never `kdkeras.deploy` or
`kdkeras.transfer`.
"""

from kdkeras.distill import callbacks
from kdkeras.distill.adapters import make_adapter
from kdkeras.distill.callbacks import BackupAndRestore
from kdkeras.distill.callbacks import Schedule
from kdkeras.distill.callbacks import TerminateOnNonFinite
from kdkeras.distill.callbacks import Warmup
from kdkeras.distill.data_checks import check_finite
from kdkeras.distill.distiller import Distiller
from kdkeras.distill.layer_pairs import propose_layer_pairs
from kdkeras.distill.multiworker import enable_multi_worker_fit
from kdkeras.distill.on_policy import sample_continuations
from kdkeras.distill.taps import find_layer

__all__ = [
    "BackupAndRestore",
    "Distiller",
    "Schedule",
    "TerminateOnNonFinite",
    "Warmup",
    "callbacks",
    "check_finite",
    "enable_multi_worker_fit",
    "find_layer",
    "make_adapter",
    "propose_layer_pairs",
    "sample_continuations",
]
