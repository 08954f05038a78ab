"""The teacher / scratch / distilled comparison behind the demo and the output recipe.

`compare_output_kd` trains a teacher, a student from scratch and the same
student distilled, under the same seeds, initial weights, batches and
epochs; `mean_std` and `write_results` report them. The models are those of
`kdkeras.models`.
"""

import os
import time

import keras
import numpy as np

from kdkeras.distill.callbacks import BackupAndRestore
from kdkeras.distill.distiller import Distiller
from kdkeras.losses import LogitsDistillation
from kdkeras.models import cnn_student
from kdkeras.models import cnn_teacher
from kdkeras.utils.atomic import atomic_write_text
from kdkeras.utils.tables import format_table

__all__ = ["EpochTimer", "compare_output_kd", "mean_std", "write_results"]


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of every training epoch in `self.times`."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def _steady_epoch_time(times):
    # The first epoch includes tracing and graph building.
    return float(np.median(times[1:] if len(times) > 1 else times))


def _ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _predict_logits(model, x, batch_size=256):
    return np.concatenate(
        [
            np.asarray(model(x[i : i + batch_size], training=False))
            for i in range(0, len(x), batch_size)
        ]
    )


def _fit(model, x, y, epochs, batch_size, verbose, seed, backup_dir=None):
    keras.utils.set_random_seed(seed)
    timer = EpochTimer()
    callbacks = [timer]
    if backup_dir is not None:
        # Kept after success, so that a rerun restores finished trainings
        # (the teacher) instead of repeating them, and resumes the others.
        callbacks.append(BackupAndRestore(backup_dir, delete_checkpoint=False))
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=verbose, callbacks=callbacks)
    return timer.times


def compare_output_kd(
    data,
    epochs=5,
    teacher_epochs=None,
    batch_size=64,
    temperature=4.0,
    student_loss_weight=0.1,
    seed=0,
    teacher=None,
    make_student=cnn_student,
    cache_teacher=False,
    backup_dir=None,
    verbose=0,
    student_optimizer="adam",
    variants=None,
):
    """Trains a teacher, a scratch student and a distilled student; compares them.

    The scratch and distilled students start from the same initial weights
    and see the same batches; only the loss differs. `variants` adds more
    distilled students, trained the same way with other terms.

    Args:
        data: `((x_train, y_train), (x_test, y_test))`, labels as class
            indices.
        epochs: student epochs. Defaults to 5.
        teacher_epochs: teacher epochs. Defaults to `epochs`.
        batch_size: batch size for every run. Defaults to 64.
        temperature: KD temperature. Defaults to 4.0.
        student_loss_weight: weight of the ground-truth loss. Defaults to 0.1.
        seed: seed of initialisation and shuffling. Defaults to 0.
        teacher: an already trained teacher to reuse (then it is not
            trained). Defaults to `None` (train `cnn_teacher`).
        make_student: a function `(input_shape, num_classes) -> keras.Model`
            building the student. Defaults to `cnn_student`.
        cache_teacher: compute the teacher's outputs once
            (`Distiller.cache_teacher_outputs`) instead of every batch; the
            same training, faster. Defaults to `False`.
        backup_dir: a folder for per-epoch backups
            (`kdkeras.callbacks.BackupAndRestore`, one subfolder per run):
            run the same call again after a crash to resume each training
            from its last completed epoch; finished trainings are restored,
            not repeated. Remove the folder to start over. Defaults to
            `None` (no backups).
        verbose: Keras verbosity for `fit`. Defaults to 0.
        student_optimizer: the optimizer of both students (an identifier,
            or a function `(epochs, steps_per_epoch) -> optimizer` called
            once per student, e.g. a recipe's optimizer with its learning-rate
            schedule: `kdkeras.distill.recipes.make_optimizer`). Defaults to
            `"adam"`.
        variants: a dict `label -> distillation term` (or list of terms):
            one more distilled student per entry, from the same initial
            weights, with the same batches and `student_loss_weight`, its
            row labelled `label` after the distilled one. Defaults to
            `None`.

    Returns:
        A dict with `rows` (one dict per model: `model`, `params`,
        `test_accuracy`, `teacher_agreement`, `epoch_time_s`) and the models
        under `teacher`, `scratch`, `distilled` and `variants` (label ->
        student).
    """
    (x_train, y_train), (x_test, y_test) = data
    input_shape, num_classes = x_train.shape[1:], int(max(y_train.max(), y_test.max()) + 1)
    teacher_times = []

    def backup(name):
        return None if backup_dir is None else os.path.join(backup_dir, f"seed{seed}-{name}")

    if teacher is None:
        keras.utils.set_random_seed(seed)
        teacher = cnn_teacher(input_shape, num_classes)
        teacher.compile(optimizer="adam", loss=_ce(), metrics=["accuracy"])
        teacher_times = _fit(
            teacher,
            x_train,
            y_train,
            teacher_epochs or epochs,
            batch_size,
            verbose,
            seed,
            backup("teacher"),
        )

    keras.utils.set_random_seed(seed + 1)
    scratch = make_student(input_shape, num_classes)
    initial = scratch.get_weights()
    steps_per_epoch = -(-len(x_train) // batch_size)

    def optimizer():
        if callable(student_optimizer):
            return student_optimizer(epochs, steps_per_epoch)
        return student_optimizer

    scratch.compile(optimizer=optimizer(), loss=_ce(), metrics=["accuracy"])
    scratch_times = _fit(
        scratch, x_train, y_train, epochs, batch_size, verbose, seed, backup("scratch")
    )

    def distil(terms, name):
        student = keras.models.clone_model(scratch)
        student.set_weights(initial)
        distiller = Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=terms,
            student_loss_weight=student_loss_weight,
        )
        distiller.compile(optimizer=optimizer(), loss=_ce(), metrics=["accuracy"])
        x_distill = distiller.cache_teacher_outputs(x_train) if cache_teacher else x_train
        times = _fit(distiller, x_distill, y_train, epochs, batch_size, verbose, seed, backup(name))
        return student, times

    distilled, distill_times = distil(LogitsDistillation(temperature=temperature), "distilled")
    trained = [
        ("teacher", teacher, teacher_times),
        ("student (scratch)", scratch, scratch_times),
        ("student (distilled)", distilled, distill_times),
    ]
    for i, (label, terms) in enumerate((variants or {}).items()):
        trained.append((label, *distil(terms, f"variant{i}")))

    teacher_pred = _predict_logits(teacher, x_test).argmax(-1)
    rows = []
    for label, model, times in trained:
        pred = _predict_logits(model, x_test).argmax(-1)
        rows.append(
            {
                "model": label,
                "params": int(model.count_params()),
                "test_accuracy": float((pred == y_test).mean()),
                "teacher_agreement": float((pred == teacher_pred).mean()),
                # No epoch ran when a finished training was restored.
                "epoch_time_s": _steady_epoch_time(times) if times else None,
            }
        )
    return {
        "rows": rows,
        "teacher": teacher,
        "scratch": scratch,
        "distilled": distilled,
        "variants": {label: model for label, model, _ in trained[3:]},
    }


def mean_std(values):
    """`"mean ± std"` (sample std, 4 decimals) of numbers; `"-"` if one is `None`."""
    if any(v is None for v in values):
        return "-"  # e.g. a training restored from its backup ran no epoch
    values = np.asarray(values, dtype="float64")
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.4f} ± {std:.4f}"


def write_results(rows, out_dir, stem, title):
    """Writes `rows` as `<stem>.json` and `<stem>.md` into `out_dir`, atomically."""
    import json

    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, f"{stem}.json")
    md_path = os.path.join(out_dir, f"{stem}.md")
    atomic_write_text(json_path, json.dumps(rows, indent=2) + "\n")
    atomic_write_text(md_path, f"# {title}\n\n{format_table(rows)}\n")
    return json_path, md_path
