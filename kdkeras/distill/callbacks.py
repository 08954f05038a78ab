"""Callbacks for long distillation runs: stop on NaN, back up and resume.

`TerminateOnNonFinite` stops training with an error that names the epoch and
step where a loss became NaN or Inf (and the terms that did), instead of
leaving a NaN model behind; `Distiller.fit` adds it unless one is given.
`BackupAndRestore` is `keras.callbacks.BackupAndRestore` with atomic backups:
a crash while a backup is written leaves the previous one usable.
`HistoryLog` keeps every epoch's logs in a file, so that a resumed run still
has the curves of the epochs trained before the crash.
"""

import json
import math
import os

import keras

from kdkeras.distill import multiworker
from kdkeras.utils import keras_compat
from kdkeras.utils.atomic import atomic_path
from kdkeras.utils.atomic import atomic_write_text

__all__ = ["BackupAndRestore", "HistoryLog", "Schedule", "TerminateOnNonFinite", "Warmup"]


def _as_float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class TerminateOnNonFinite(keras.callbacks.Callback):
    """Stops training with an error when a logged loss becomes NaN or Inf.

    Checks every training step's logs (`loss`, `student_loss`, each
    distillation term) and raises a `FloatingPointError` naming the epoch,
    the step and the non-finite entries, with a hint at the likely cause:
    NaN/Inf in the inputs, in the teacher's (or cached) outputs, or a loss
    that diverged. Raising, rather than setting `model.stop_training`, keeps
    the last good backup of `BackupAndRestore` on disk.

    A run whose first epoch yields no batch at all (an empty dataset of
    unknown size) raises a `ValueError` instead of "training" on nothing.

    `kdkeras.Distiller.fit` adds this callback unless the callbacks given
    already hold one (or a `keras.callbacks.TerminateOnNaN`).

    Example:

    ```python
    model.fit(x, y, callbacks=[kdkeras.callbacks.TerminateOnNonFinite()])
    ```
    """

    # Keras dispatches the batch-end check to a worker thread: the training
    # loop never waits for it (the host sync of reading the logs happens off
    # the main thread); an error surfaces at the next step or the epoch end.
    async_safe = True

    def __init__(self):
        super().__init__()
        self._epoch = 0
        self._steps_seen = 0

    def on_train_begin(self, logs=None):
        self._steps_seen = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._steps_seen += 1
        if not logs:
            return
        values = {k: _as_float(v) for k, v in logs.items()}
        values = {k: v for k, v in values.items() if v is not None}
        bad = sorted(k for k, v in values.items() if not math.isfinite(v))
        if not bad:
            return
        shown = ", ".join(f"{k}={values[k]}" for k in sorted(values))
        raise FloatingPointError(
            f"Expected finite losses. Received non-finite {', '.join(bad)} at "
            f"epoch {self._epoch + 1}, step {batch + 1} ({shown}). "
            f"{_hint(values, bad)}"
        )

    def on_epoch_end(self, epoch, logs=None):
        if self._steps_seen == 0:
            raise ValueError(
                "Expected a non-empty dataset. Received: data that yielded no "
                f"batch in epoch {epoch + 1}, so nothing was trained"
            )

    def get_config(self):
        return {}


def _hint(values, bad):
    terms = [k for k in values if k.endswith("_loss") and k != "student_loss"]
    student_ok = "student_loss" in values and math.isfinite(values["student_loss"])
    if student_ok and any(k in bad for k in terms):
        return (
            "The ground-truth loss is finite but a distillation term is not: "
            "the teacher's outputs (or the cached teacher outputs) hold NaN or "
            "Inf for this batch, or a term overflowed (try a lower temperature)."
        )
    return (
        "Check this batch's inputs for NaN or Inf (kdkeras.distill.check_finite), "
        "and lower the learning rate if the loss diverged."
    )


def _worker_suffix(model):
    """A folder per worker under a multi-worker strategy, None otherwise."""
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is None or not multiworker.is_multi_worker(strategy):
        return None
    return f"worker-{strategy.cluster_resolver.task_id}"


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` whose backups are written atomically.

    Backs up the training state (model and optimizer variables, epoch) at the
    end of every epoch and, when `fit` is run again after a crash, restores it
    and resumes from the last completed epoch. With deterministic ops
    (`tf.config.experimental.enable_op_determinism()`), a fixed seed and
    unshuffled data (or a dataset whose order does not depend on the epoch
    count), the resumed run ends with the same weights as an uninterrupted
    one.

    Keras writes the weights and then the epoch number in place: a crash
    between the two, or during the first, leaves a backup that does not load,
    or one whose weights are an epoch ahead of its epoch number. Here each
    backup's weights go to a new file, and a small JSON file naming that file
    and its epoch is replaced atomically last: the rename is the commit, and
    a crash at any point leaves the previous backup whole.

    Under `tf.distribute.MultiWorkerMirroredStrategy` each worker keeps its
    backup in `backup_dir/worker-<index>`, so workers sharing a file system do
    not overwrite each other.

    Args:
        backup_dir: folder for the backup; use it for nothing else.
        save_freq: `"epoch"` or a number of batches. Resuming is exact only
            with `"epoch"`: a backup taken mid-epoch resumes at the start of
            that epoch. Defaults to `"epoch"`.
        double_checkpoint: keep the previous backup's weights too. Defaults
            to `False`.
        delete_checkpoint: remove the backup once `fit` completes. Defaults
            to `True`.

    Example:

    ```python
    backup = kdkeras.callbacks.BackupAndRestore("runs/kd/backup")
    distiller.fit(x, y, epochs=30, callbacks=[backup])  # rerun after a crash
    ```
    """

    _STATE = "training_state.json"

    @classmethod
    def completed_epochs(cls, backup_dir):
        """How many epochs the backup in `backup_dir` holds: where `fit` resumes (0 if none).

        Reads the single-worker backup (not the `worker-<index>` folders).
        """
        path = os.path.join(os.fspath(backup_dir), cls._STATE)
        if not os.path.exists(path):
            return 0
        with open(path, encoding="utf-8") as f:
            return int(json.load(f)["epoch"])

    def _folder(self):
        suffix = _worker_suffix(self.model) if self.model is not None else None
        return os.path.join(self.backup_dir, suffix) if suffix else self.backup_dir

    def _state_path(self):
        return os.path.join(self._folder(), self._STATE)

    def _read_state(self):
        path = self._state_path()
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def on_train_begin(self, logs=None):
        try:
            self._load_model()
        except OSError:
            # Only a file damaged after it was written gets here (a backup is
            # never half-written); fall back to the previous backup if kept.
            state = self._read_state() or {}
            if not state.get("previous"):
                raise
            self._load_model(state["previous"])

    def _load_model(self, state=None):
        if not self.model.built:
            raise ValueError(
                "Expected a built model for BackupAndRestore: call it on a batch "
                f"of data before fit(). Received: an unbuilt model {self.model.name!r}"
            )
        state = self._read_state() if state is None else state
        if state is None:
            return
        weights = os.path.join(self._folder(), state["weights"])
        if self.model.optimizer is not None and not self.model.optimizer.built:
            # The optimizer's variables must exist to receive their values.
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(weights)
        keras_compat.set_initial_epoch(self.model, state["epoch"])

    def _save_model(self):
        folder = self._folder()
        os.makedirs(folder, exist_ok=True)
        previous = self._read_state()
        name = f"epoch-{self._current_epoch}-batch-{self._last_batch_seen}.weights.h5"
        with atomic_path(os.path.join(folder, name), suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp)
        state = {
            "epoch": self._current_epoch,
            "batch": self._last_batch_seen,
            "weights": name,
        }
        if self.double_checkpoint and previous is not None:
            state["previous"] = {k: previous[k] for k in ("epoch", "batch", "weights")}
        # The commit point: until this rename, the previous state stands.
        atomic_write_text(self._state_path(), json.dumps(state))
        keep = {name}
        if self.double_checkpoint and previous is not None:
            keep.add(previous["weights"])
        for entry in os.listdir(folder):
            if entry.endswith(".weights.h5") and entry not in keep and not entry.startswith("."):
                os.remove(os.path.join(folder, entry))


class HistoryLog(keras.callbacks.Callback):
    """Keeps every epoch's logs in a JSON file, across resumed runs.

    The `History` that `fit` returns holds only the epochs of that call: after
    a crash and a resume (`BackupAndRestore`) the earlier epochs are gone
    from it. This callback stores each epoch's logs under its epoch number,
    dropping entries from that epoch on (left by a run that crashed before
    its backup, or by an earlier, longer run), and replaces the file
    atomically. Place it before `BackupAndRestore` in the callbacks, so that
    the log is never behind the backup.

    Args:
        path: the JSON file (read at construction when it exists).

    Example:

    ```python
    log = kdkeras.callbacks.HistoryLog("run/backup/history.json")
    backup = kdkeras.callbacks.BackupAndRestore("run/backup")
    distiller.fit(x, y, epochs=20, callbacks=[log, backup])
    log.history["loss"]  # every epoch, also after a resume
    ```
    """

    def __init__(self, path):
        super().__init__()
        self.path = os.fspath(path)
        self.epochs = []
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                self.epochs = list(json.load(f))

    def on_epoch_end(self, epoch, logs=None):
        values = {k: _as_float(v) for k, v in (logs or {}).items()}
        entry = {"epoch": int(epoch), **{k: v for k, v in values.items() if v is not None}}
        self.epochs = [e for e in self.epochs if e["epoch"] < epoch] + [entry]
        atomic_write_text(self.path, json.dumps(self.epochs, indent=1))

    @property
    def history(self):
        """`{metric: [value per epoch]}`, like `keras.callbacks.History.history`."""
        keys = []
        for entry in self.epochs:
            keys += [k for k in entry if k != "epoch" and k not in keys]
        return {k: [e.get(k) for e in self.epochs] for k in keys}

    def get_config(self):
        return {"path": self.path}


_TARGETS = ("student_loss_weight", "distillation_loss_weights", "temperatures")


def _parse_target(target):
    name, index = target, None
    if isinstance(target, str) and target.endswith("]") and "[" in target:
        name, _, rest = target.partition("[")
        index = int(rest[:-1]) if rest[:-1].isdigit() else -1
    if name not in _TARGETS or (index is not None and index < 0):
        raise ValueError(
            f"Expected `target` to be one of {list(_TARGETS)}, optionally with a "
            "term index (`'temperatures[0]'`). Received: "
            f"target={target!r}"
        )
    return name, index


class Schedule(keras.callbacks.Callback):
    """Sets a `Distiller`'s loss weights or temperatures at every epoch start.

    The values live in variables that the compiled training step reads
    (`Distiller.schedule_variables`), so a change reaches the very next step
    without retracing.

    Args:
        target: `"student_loss_weight"`, `"distillation_loss_weights"` or
            `"temperatures"` (every term that has one), or one term's:
            `"distillation_loss_weights[1]"`, `"temperatures[0]"`.
        schedule: a function `(epoch, initial) -> value`: `epoch` counts
            from 0, `initial` is the value the Distiller was built with.
        verbose: print each change. Defaults to 0.

    Example:

    ```python
    # Anneal the temperature from 8 to 2 over 30 epochs.
    anneal = kdkeras.callbacks.Schedule(
        "temperatures", lambda epoch, t0: max(2.0, t0 - 6.0 * epoch / 30)
    )
    distiller.fit(x, y, epochs=30, callbacks=[anneal])
    ```
    """

    def __init__(self, target, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(
                "Expected `schedule` to be a function (epoch, initial) -> value. "
                f"Received: schedule={schedule!r}"
            )
        self.target = target
        self.schedule = schedule
        self.verbose = verbose
        self._name, self._index = _parse_target(target)

    def _pairs(self):
        """`(variable, initial value)` for each variable the target names."""
        model = self.model
        if not hasattr(model, "schedule_variables"):
            raise ValueError(
                "Expected the model to be a kdkeras.Distiller (schedules change "
                f"its loss weights). Received: a {type(model).__name__}"
            )
        variables = model.schedule_variables[self._name]
        if self._name == "student_loss_weight":
            return [(variables, model.student_loss_weight)]
        initial = (
            model.distillation_loss_weights
            if self._name == "distillation_loss_weights"
            else [getattr(t, "temperature", None) for t in model.distillation_losses]
        )
        pairs = [(v, i) for v, i in zip(variables, initial) if v is not None]
        if self._index is not None:
            if self._index >= len(variables) or variables[self._index] is None:
                raise ValueError(
                    f"Expected a term index with a {self._name[:-1].replace('_', ' ')} "
                    f"(0 to {len(variables) - 1}). Received: target={self.target!r}"
                )
            pairs = [(variables[self._index], initial[self._index])]
        return pairs

    def on_epoch_begin(self, epoch, logs=None):
        for variable, initial in self._pairs():
            value = self.schedule(epoch, initial)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(
                    f"Expected the schedule of {self.target!r} to return a finite "
                    f"number. Received: {value!r} at epoch {epoch + 1}"
                )
            if self._name == "student_loss_weight" and not 0 <= value <= 1:
                raise ValueError(
                    f"Expected a student_loss_weight in [0, 1] from the schedule. "
                    f"Received: {value!r} at epoch {epoch + 1}"
                )
            if self._name == "temperatures" and value <= 0:
                raise ValueError(
                    f"Expected a temperature > 0 from the schedule. Received: "
                    f"{value!r} at epoch {epoch + 1}"
                )
            if self._name == "distillation_loss_weights" and value < 0:
                raise ValueError(
                    f"Expected a distillation loss weight >= 0 from the schedule. "
                    f"Received: {value!r} at epoch {epoch + 1}"
                )
            variable.assign(float(value))
            if self.verbose:
                print(f"Epoch {epoch + 1}: {variable.name} = {float(value):.4g}")

    def get_config(self):
        return {"target": self.target, "verbose": self.verbose}


class Warmup(Schedule):
    """Ramps distillation terms in linearly over the first epochs (DKD's warm-up).

    Epoch `e` (from 0) uses `initial * min((e + 1) / epochs, 1)`: mdistiller
    ramps DKD in over 20 epochs, without which DKD with `beta=8` is unstable
    early.

    Args:
        epochs: the length of the ramp. Defaults to 20.
        target: what to ramp. Defaults to `"distillation_loss_weights"`.
        verbose: print each change. Defaults to 0.

    Reference:
        Zhao et al. Decoupled Knowledge Distillation. CVPR 2022.
        https://arxiv.org/abs/2203.08679
    """

    def __init__(self, epochs=20, target="distillation_loss_weights", verbose=0):
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(
                f"Expected `epochs` to be an integer >= 1. Received: epochs={epochs!r}"
            )
        self.epochs = epochs
        super().__init__(
            target, lambda epoch, initial: initial * min((epoch + 1) / epochs, 1.0), verbose
        )

    def get_config(self):
        return {"epochs": self.epochs, "target": self.target, "verbose": self.verbose}
