"""From a trained teacher to a deployed student in one call: `kdkeras distill`.

`distill(teacher, data, out_dir)` checks the teacher and the data, builds a
student (derived from the teacher with `kdkeras.transfer.shrink` by
default, see `kdkeras.models.build_student`), distils it with a recipe
(`kdkeras.distill.recipes`), exports teacher and student to ONNX through the
parity gate, quantizes the student to int8 (agreement-gated), benchmarks
the three with onnxruntime and writes `results.json` and `report.md` (with
plots) into `out_dir`. It returns a `DistillResult`, whose `table()` the
command prints.

The stages and what each writes into `out_dir`:

1. `train`: `student.keras` (with a backup after every epoch in `backup/`);
2. `export`: `teacher.onnx`, `student.onnx` (with their manifests);
3. `quantize`: `student.int8.onnx` (with its manifest);
4. `bench`: the benchmark figures (kept in `stages.json`);

then `report.md`, `bench.png`, `curves.png` and `results.json`. Every file
is written atomically. `stages.json` records a digest of each finished
stage's inputs and the sha256 of the files it wrote
(`kdkeras.utils.stages`): running the same call again after a crash or
Ctrl-C resumes training from the last finished epoch and skips every stage
whose inputs have not changed.

Like `kdkeras.comparison`, this module spans the pipeline (data, distill,
transfer, deploy); the command line only parses and prints.
"""

import dataclasses
import json
import os
import time

from kdkeras import datasets
from kdkeras import models
from kdkeras import pipeline_report
from kdkeras.distill import recipes
from kdkeras.distill.callbacks import BackupAndRestore
from kdkeras.distill.callbacks import HistoryLog
from kdkeras.utils import stages as stages_lib
from kdkeras.utils.atomic import atomic_path
from kdkeras.utils.atomic import atomic_write_text
from kdkeras.utils.atomic import discard
from kdkeras.utils.atomic import remove_leftovers
from kdkeras.utils.tables import format_table

__all__ = ["DistillResult", "QUANTIZE_MODES", "distill"]

QUANTIZE_MODES = ("static", "dynamic", None)
BENCH_BATCH = 64
_FILES = (
    "student.keras",
    "teacher.onnx",
    "student.onnx",
    "student.int8.onnx",
    "results.json",
    "report.md",
    "bench.png",
    "curves.png",
    "stages.json",
)
_BACKUP_FILES = ("training_state.json", "history.json", "run.json")


@dataclasses.dataclass
class DistillResult:
    """What `distill` did: the figures, the files, the settings.

    Attributes:
        out_dir: the output folder.
        rows: one `dict` per model (teacher, student, student int8): `model`,
            `file`, `params`, `size KB`, `test accuracy` (`None` without
            labels), `teacher agreement`, `p50 ms` (batch 1), `batch-64 /s`.
        paths: `{file name: path}` of the files in `out_dir`.
        settings: the exact settings (as in `results.json`).
        history: `{metric: [value per epoch]}` of the whole training, resumed
            runs included.
        stages: `{stage: what happened in this call}`.
        stage_seconds: `{stage: seconds}` of each stage when it ran (in this
            call or the earlier one whose result was kept).
        notes: lines to show under the table (a failed int8 gate, ...).
        seconds: wall time of this call.
    """

    out_dir: str
    rows: list
    paths: dict
    settings: dict
    history: dict
    stages: dict
    stage_seconds: dict
    notes: list
    seconds: float

    def table(self, markdown=True):
        """The summary table (`kdkeras.utils.tables.format_table`)."""
        return format_table(self.rows, markdown=markdown)


class _Stages:
    """Runs named stages, skipping those finished earlier with the same inputs."""

    def __init__(self, out_dir, say):
        self.out_dir = out_dir
        self.file = stages_lib.StageFile(os.path.join(out_dir, "stages.json"))
        self.say = say
        self.status, self.seconds = {}, {}

    def run(self, name, inputs, outputs, fn):
        """`fn()` (a dict to record) unless done; returns the stage's record."""
        if self.file.is_done(name, inputs):
            self.status[name] = "skipped (finished earlier with the same inputs)"
            self.say(f"{name}: finished earlier with the same inputs, skipped")
        else:
            start = time.perf_counter()
            try:
                extra = fn()
            except OSError as e:
                if e.errno is None:
                    raise
                raise OSError(
                    e.errno,
                    f"{e.strerror}, in the {name} stage writing into {self.out_dir}; "
                    "the files already there are left as they were",
                ) from e
            extra["seconds"] = round(time.perf_counter() - start, 2)
            self.file.mark_done(name, inputs, [p for p in outputs if os.path.exists(p)], **extra)
            self.status[name] = "ran"
        record = self.file.record(name)
        self.seconds[name] = record.get("seconds")
        return record


# ------------------------------------------------------------ checks


def _load_teacher(teacher, safe_mode):
    """`(model, source, digest)` for a model or a path."""
    import keras

    if isinstance(teacher, keras.Model):
        return teacher, "the given model", _model_digest(teacher)
    if not isinstance(teacher, (str, os.PathLike)):
        raise TypeError(
            "Expected `teacher` to be a keras.Model or the path of a .keras file, a "
            f"legacy .h5 file or a SavedModel folder. Received: teacher={teacher!r}"
        )
    model = models.load_model(teacher, safe_mode=safe_mode, arg="teacher")
    return model, os.fspath(teacher), stages_lib.file_sha256(teacher)


def _model_digest(model):
    return stages_lib.value_digest([model.to_json(), stages_lib.array_digest(*model.get_weights())])


def _student_key(student):
    """What identifies the student asked for, in the digest of the train stage."""
    if student is not None and not isinstance(student, (str, os.PathLike)):
        return ["model", _model_digest(student)]
    kind, value = models.parse_student(student)
    return [kind, stages_lib.file_sha256(value) if kind == "file" else value]


def _image_scale(teacher):
    """Pixels in [0, 1], unless the teacher rescales its 0-255 inputs itself."""
    import keras

    layers = [layer for layer in teacher.layers if not isinstance(layer, keras.layers.InputLayer)]
    starts_rescaling = bool(layers) and isinstance(layers[0], keras.layers.Rescaling)
    return 1.0 if starts_rescaling else 1 / 255


# ------------------------------------------------------------ stages


def _prepare_backup(backup_dir, key, epochs, say):
    """Keeps a backup made with the same settings and at most `epochs` epochs.

    Clears one made with other settings, or one that already went past
    `epochs` (its weights would not be those of an `epochs`-epoch run).
    """
    path = os.path.join(backup_dir, "run.json")
    previous = None
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            previous = json.load(f).get("key")
    done = BackupAndRestore.completed_epochs(backup_dir)
    reason = None
    if previous is not None and previous != key:
        reason = "was made with other settings"
    elif done > epochs:
        reason = f"holds {done} epochs, more than the {epochs} asked for"
    if reason:
        say(f"train: the backup in {backup_dir} {reason}; starting over")
        for name in os.listdir(backup_dir):
            if name in _BACKUP_FILES or name.endswith(".weights.h5"):
                os.remove(os.path.join(backup_dir, name))
    atomic_write_text(path, json.dumps({"key": key}))


def _train(teacher, student, data, run, say):
    """Distils `student`; returns its history over every epoch (resumes included)."""
    import keras

    steps = -(-len(data.x_train) // run["batch_size"])
    distiller, compile_kwargs, callbacks = recipes.build(
        run["recipe"],
        teacher,
        student,
        num_classes=int(teacher.outputs[0].shape[-1]),
        epochs=run["epochs"],
        steps_per_epoch=steps,
        verbose=run["verbose"] > 0,
    )
    if data.y_train is None:
        # Label metrics never see a label: Keras would fail reading them.
        compile_kwargs.pop("metrics", None)
    distiller.compile(**compile_kwargs)
    backup_dir = run["backup_dir"]
    _prepare_backup(backup_dir, run["backup_key"], run["epochs"], say)
    done = BackupAndRestore.completed_epochs(backup_dir)
    if done:
        say(f"train: resuming from the backup after epoch {done} of {run['epochs']}")
    x, x_val = data.x_train, data.x_test
    if recipes.settings(run["recipe"])["cache_teacher"]:
        say("train: computing the teacher's outputs once, for every epoch")
        x, x_val = distiller.cache_teacher_outputs(x), distiller.cache_teacher_outputs(x_val)
    log = HistoryLog(os.path.join(backup_dir, "history.json"))
    keras.utils.set_random_seed(run["seed"])
    distiller.fit(
        x,
        data.y_train,
        epochs=run["epochs"],
        batch_size=run["batch_size"],
        validation_data=(x_val, data.y_test) if data.y_test is not None else (x_val,),
        # The log first: it is never behind the backup.
        callbacks=[log, BackupAndRestore(backup_dir, delete_checkpoint=False), *callbacks],
        verbose=run["verbose"],
    )
    return log.history


def _train_stage(stages, paths, teacher, student, data, run, say):
    """`(student model, description, history)`, trained or kept from an earlier call."""
    built = {}

    def fn():
        model, description = models.build_student(
            student, teacher, safe_mode=run["safe_mode"], seed=run["seed"]
        )
        built["model"] = model
        say(
            f"Student: {description}: {model.count_params():,} parameters "
            f"({teacher.count_params() / max(1, model.count_params()):.1f}x fewer)"
        )
        terms = json.dumps(recipes.settings(run["recipe"])["terms"])
        say(f"Recipe: {run['recipe']} {terms}, {run['epochs']} epochs, batch {run['batch_size']}")
        history = _train(teacher, model, data, run, say)
        with atomic_path(paths["student.keras"], suffix=".keras") as tmp:
            model.save(tmp)
        return {"history": history, "student": description}

    inputs = {"settings": run["backup_key"], "epochs": run["epochs"]}
    record = stages.run("train", inputs, [paths["student.keras"]], fn)
    model = built.get("model")
    if model is None:
        model = models.load_model(paths["student.keras"], safe_mode=run["safe_mode"], arg="student")
        say(f"Student: {record['student']}: {model.count_params():,} parameters (student.keras)")
    return model, record["student"], record["history"]


def _deploy_stages(stages, paths, teacher, teacher_digest, student, data, quantize, smoke, say):
    """Export, int8 and benchmark; returns `(bench results, manifests, notes)`."""
    from kdkeras import deploy

    sha = lambda name: stages_lib.file_sha256(paths[name])  # noqa: E731
    manifest_path = lambda name: paths[name] + deploy.manifest.MANIFEST_SUFFIX  # noqa: E731
    test = stages_lib.array_digest(data.x_test, data.y_test)

    def export():
        say("export: teacher.onnx and student.onnx, parity-gated")
        return {
            "manifests": {
                name: deploy.export(model, paths[name], "onnx", sample_inputs=data.x_test)
                for name, model in (("teacher.onnx", teacher), ("student.onnx", student))
            }
        }

    inputs = {"student": sha("student.keras"), "teacher": teacher_digest, "data": test}
    outputs = [paths["teacher.onnx"], paths["student.onnx"]]
    manifests = dict(stages.run("export", inputs, outputs, export)["manifests"])
    files, notes = ["teacher.onnx", "student.onnx"], []

    if quantize:
        calibration = data.x_train[:256]

        def int8():
            say(f"quantize: student.int8.onnx ({quantize} int8), agreement-gated")
            try:
                manifest = deploy.quantize(
                    student,
                    paths["student.onnx"],
                    paths["student.int8.onnx"],
                    mode=quantize,
                    calibration_data=calibration,
                    eval_data=data.x_test if data.y_test is None else (data.x_test, data.y_test),
                )
            except deploy.ParityError as e:
                # An int8 file already there is an earlier student's: not this one's.
                for stale in (paths["student.int8.onnx"], manifest_path("student.int8.onnx")):
                    discard(stale)
                return {"failed": " ".join(str(e).split())}
            return {"manifest": manifest}

        inputs = {
            "student": sha("student.onnx"),
            "mode": quantize,
            "calibration": stages_lib.array_digest(calibration),
            "data": test,
        }
        record = stages.run("quantize", inputs, [paths["student.int8.onnx"]], int8)
        if "failed" in record:
            notes.append(
                f"no int8 student: its agreement gate failed ({record['failed']}); the "
                "rejected file is kept as student.int8.failed.onnx"
            )
        else:
            manifests["student.int8.onnx"] = record["manifest"]
            files.append("student.int8.onnx")
    else:
        stages.status["quantize"] = "not asked (--quantize none)"

    timing = {"calls": 5, "repeats": 2} if smoke else {"calls": 20, "repeats": 5}

    def bench():
        say(f"bench: onnxruntime, batch-1 latency and batch-{BENCH_BATCH} throughput")
        results = deploy.benchmark(
            {name: paths[name] for name in files},
            data.x_test,
            data.y_test,
            reference="teacher.onnx",
            batch_size=BENCH_BATCH,
            **timing,
        )
        return {"results": results}

    inputs = {"files": {name: sha(name) for name in files}, "data": test, **timing}
    results = stages.run("bench", inputs, [], bench)["results"]
    return results, manifests, notes


# ------------------------------------------------------------ the call


def distill(
    teacher,
    data,
    out_dir,
    *,
    student=None,
    recipe="recommended",
    epochs=20,
    batch_size=64,
    quantize="static",
    backup_dir=None,
    safe_mode=True,
    seed=0,
    smoke=False,
    command=None,
    verbose=1,
):
    """Distils a trained teacher into a deployed student, in one resumable call.

    Checks everything it can before training (the teacher; the data against
    the teacher's input shape, dtype and classes; the student), then runs
    the stages of the module docstring, each skipped on a rerun when its
    inputs have not changed. Nothing is written into `out_dir` before those
    checks pass, and every file is written atomically: a crash (or a full
    disk) leaves the files of an earlier call whole.

    Args:
        teacher: a trained `keras.Model` outputting `(batch, classes)`
            logits, or the path of a `.keras` file, a legacy `.h5` file or a
            SavedModel folder (see `kdkeras.models.load_model`).
        data: a dataset name (`"mnist-5k"`, `"digits"`, `"mnist"`), an `.npz`
            file, a folder of images (see `kdkeras.datasets.load_user_data`),
            or arrays `((x_train, y_train), (x_test, y_test))`. Labels may
            be `None`: the student then learns from the teacher's outputs
            alone, and accuracy is not reported.
        out_dir: the output folder (created).
        student: `None` (derived from the teacher, about 4x fewer
            parameters), `"shrink:width=0.5,depth=2,rank=8"`, `"mlp"`,
            `"cnn"`, a `.keras` file, or a `keras.Model` (see
            `kdkeras.models.build_student`). Defaults to `None`.
        recipe: a key of `kdkeras.distill.recipes.RECIPES`. Defaults to
            `"recommended"`.
        epochs: training epochs. Defaults to 20.
        batch_size: training batch size. Defaults to 64.
        quantize: `"static"`, `"dynamic"` or `None` (no int8 student).
            Defaults to `"static"`.
        backup_dir: the per-epoch backup folder (kept after training, so
            that a rerun with more epochs continues). Defaults to
            `out_dir/backup`.
        safe_mode: Keras's safe mode for model files (`False` only for
            trusted files holding `Lambda` layers). Defaults to `True`.
        seed: seed of the student's initial weights and of shuffling.
            Defaults to 0.
        smoke: a tiny run for tests: the first 256 / 128 samples and a short
            benchmark. Defaults to `False`.
        command: the command line, recorded in the report. Defaults to none.
        verbose: 1 prints progress and Keras's progress bar; 0 is silent.
            Defaults to 1.

    Returns:
        A `DistillResult`.

    Raises:
        ValueError: bad arguments; a teacher, data or student that cannot be
            used (the file, the shapes or the layer in the message).
        kdkeras.deploy.ParityError: an ONNX export does not match Keras.
        OSError: a failed write (the files already in `out_dir` are kept).

    Example:

    ```python
    result = kdkeras.pipeline.distill("teacher.keras", "mnist-5k", "out", epochs=10)
    print(result.table())
    ```
    """
    start = time.perf_counter()
    say = print if verbose else (lambda *args, **kwargs: None)
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Expected `{name}` to be an integer >= 1. Received: {name}={value!r}")
    quantize = None if quantize in (None, "none") else quantize
    if quantize not in QUANTIZE_MODES:
        raise ValueError(
            f"Expected quantize 'static', 'dynamic' or None. Received: quantize={quantize!r}"
        )
    recipe_settings = recipes.settings(recipe)
    student_key = _student_key(student)  # a malformed spec fails before anything loads

    teacher_model, teacher_source, teacher_digest = _load_teacher(teacher, safe_mode)
    input_shape, input_dtype, num_classes = models.classifier_io(teacher_model, arg="teacher")
    say(
        f"Teacher: {teacher_source}: {teacher_model.count_params():,} parameters, "
        f"input {input_shape}, {num_classes} classes"
    )
    if models.wraps_saved_model(teacher_model):
        say(
            "  a SavedModel run through keras.layers.TFSMLayer: it can teach, but its "
            "layers are hidden from Keras (no shrink, no feature terms)"
        )
    user = datasets.load_user_data(
        data,
        input_shape,
        num_classes=num_classes,
        dtype=input_dtype,
        image_scale=_image_scale(teacher_model),
    )
    if smoke:
        user = user.subset()
    say(f"Data: {user.source}: {user.split}")
    if not user.labeled:
        say("  no labels: the student learns from the teacher's outputs alone")

    out_dir = os.fspath(out_dir)
    paths = {name: os.path.join(out_dir, name) for name in _FILES}
    train_key = {
        "teacher": teacher_digest,
        "data": stages_lib.array_digest(user.x_train, user.y_train, user.x_test, user.y_test),
        "student": student_key,
        "recipe": recipe_settings,
        "batch_size": batch_size,
        "seed": seed,
    }
    run = {
        "recipe": recipe,
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "safe_mode": safe_mode,
        "verbose": verbose,
        "backup_dir": os.fspath(backup_dir) if backup_dir else os.path.join(out_dir, "backup"),
        # Epochs are left out: a rerun with more epochs continues the backup.
        "backup_key": stages_lib.value_digest(train_key),
    }
    for folder in (out_dir, run["backup_dir"]):
        remove_leftovers(folder)  # temporary files of a killed earlier call
    stages = _Stages(out_dir, say)
    student_model, student_desc, history = _train_stage(
        stages, paths, teacher_model, student, user, run, say
    )
    results, manifests, notes = _deploy_stages(
        stages, paths, teacher_model, teacher_digest, student_model, user, quantize, smoke, say
    )
    rows, ratios = pipeline_report.summary(
        results, teacher_model.count_params(), student_model.count_params()
    )
    settings = {
        "teacher": teacher_source,
        "data": user.source,
        "split": user.split,
        "labeled": user.labeled,
        "class_names": user.class_names,
        "n_train": len(user.x_train),
        "n_test": len(user.x_test),
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "student": student_desc,
        "recipe": recipe,
        "recipe_settings": recipe_settings,
        "epochs": epochs,
        "batch_size": batch_size,
        "quantize": quantize,
        "seed": seed,
        "smoke": smoke,
        "backup_dir": run["backup_dir"],
        "safe_mode": safe_mode,
    }
    result = DistillResult(
        out_dir=out_dir,
        rows=rows,
        paths=paths,
        settings=settings,
        history=history,
        stages=stages.status,
        stage_seconds=stages.seconds,
        notes=notes,
        seconds=0.0,
    )
    written = pipeline_report.write_report(result, results, manifests, ratios, command)
    result.paths = {name: paths[name] for name in _FILES if name in written}
    result.seconds = time.perf_counter() - start
    pipeline_report.write_results(result, results, manifests, ratios, command)
    return result
