"""The results study: where distillation beats fair labels-only training, and by how much.

MNIST-5k (4,000 train / 1,000 test; settings chosen with `--validate`, which
trains on 3,200 of the 4,000 and scores the other 800, never the test set)
or scikit-learn's digits. Every row is trained per seed with the same
optimizer (Adam, clipnorm 1.0, cosine schedule with a one-epoch warmup),
batch size and epochs; accuracies are **last-epoch** test accuracies, mean ±
std over seeds, with the gap closed `(row - fair) / (teacher - fair)` per
seed against that seed's fair baseline.

Rows, per student:

  labels                  labels only, no augmentation
  labels + aug            labels only, with the augmentation: the fair baseline
  KD (cached, no aug)     today's recipe: teacher outputs cached, T=4, student_loss_weight=0.5
  KD + views              teacher and student see the same augmented batch
  KD + views + mixup      the same, mixed within the batch
  ... (patient)           the best KD row, `--patience` times longer
  keras.distillation      its defaults (LogitsDistillation(), student_loss_weight=0.5), no aug

`--sweep "method=kd+ta"` (validation only) adds a teacher assistant: an
MLP-256 distilled from the teacher, then the student distilled from it.

`--hungry`: the data-hungry case: 400 labels (10%), the other 3,600 images
unlabeled. Labels-only on the 400 (with augmentation, as many steps as the
distilled run) against the student distilled on all 4,000 images without
their labels; the teacher is trained on the full labeled set. With
`--patience P` the baseline and the `--patient-methods` rows also run P
times longer.

`--teachers N`: the teacher is an ensemble of N teachers trained from other
seeds (`Distiller([t1, ..., tN], ...)` averages their soft targets); its
accuracy is that of the averaged probabilities, and the gap closed is
measured against it.

Commands (2 CPU cores):

    python benchmarks/accuracy.py --validate --seeds 1          # choose T, weights, alpha
    python benchmarks/accuracy.py --seeds 5 --out runs/accuracy
    python benchmarks/accuracy.py --hungry --seeds 5 --out runs/accuracy
"""

import argparse
import json
import os
import sys
import time

import keras
import numpy as np

import kdkeras
from kdkeras.utils import tables
from kdkeras.utils.atomic import atomic_write_text

BATCH = 128
ASSISTANT = "mlp256"  # the teacher assistant of the `kd+ta` rows


def _ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def augmentation(seed):
    """Small translations, rotations and zooms: what a digit may look like."""
    return keras.Sequential(
        [
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed),
            keras.layers.RandomRotation(0.05, fill_mode="constant", seed=seed + 1),
            keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 2),
        ],
        name="augment",
    )


def teacher_model(input_shape, num_classes):
    """A pooled CNN: strong with augmentation, cheap enough to run online."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(num_classes),
        ],
        name="teacher",
    )


def student_model(spec, input_shape, num_classes):
    if spec == "cnn":
        return kdkeras.models.cnn_student(input_shape, num_classes)
    units = int(spec.removeprefix("mlp"))
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(units, activation="relu"),
            keras.layers.Dense(num_classes),
        ],
        name=f"student_{spec}",
    )


def optimizer(steps):
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(1, steps), warmup_target=2e-3, warmup_steps=max(1, steps // 20)
    )
    return keras.optimizers.Adam(schedule, clipnorm=1.0)


def accuracy(model, x, y):
    """Test accuracy of a model, or of an ensemble (a list: its averaged probabilities)."""
    models = model if isinstance(model, list) else [model]
    probs = 0.0
    for m in models:
        logits = np.concatenate(
            [np.asarray(m(x[i : i + 512], training=False)) for i in range(0, len(x), 512)]
        )
        probs = probs + np.asarray(keras.ops.softmax(logits))
    return float((probs.argmax(-1) == y).mean())


def _steps(n, epochs):
    return -(-n // BATCH) * epochs


def train_teacher(data, seed, epochs, count=1):
    """One teacher, or with `count > 1` a list of teachers (an ensemble) from other seeds."""
    (x, y), _ = data
    teachers = []
    for i in range(count):
        keras.utils.set_random_seed(seed + 1000 * i)
        teacher = teacher_model(x.shape[1:], 10)
        model = keras.Sequential([augmentation(seed + 1000 * i), teacher])
        model.compile(optimizer(_steps(len(x), epochs)), _ce())
        model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0)
        teachers.append(teacher)
    return teachers[0] if count == 1 else teachers


class Curve(keras.callbacks.Callback):
    """Test accuracy after every epoch, with the training seconds so far (evaluation excluded)."""

    def __init__(self, student, x_test, y_test):
        super().__init__()
        self.student, self.x_test, self.y_test = student, x_test, y_test
        self.points, self.seconds = [], 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds += time.perf_counter() - self.start
        self.points.append(
            (epoch + 1, self.seconds, accuracy(self.student, self.x_test, self.y_test))
        )


def _distil(teacher, student, row, x, y, epochs, seed, unlabeled=None, callbacks=()):
    """Distils `student` from `teacher` as a KD row says (cached, views, or views + mixup)."""
    method = row["method"]
    views = method.startswith("kd+views")
    distiller = kdkeras.Distiller(
        teacher,
        student,
        kdkeras.LogitsDistillation(temperature=row["T"]),
        student_loss_weight=row["slw"] if unlabeled is None else 0.0,
        augment=augmentation(seed) if views else None,
        mixup=row.get("alpha") if method == "kd+views+mixup" else None,
    )
    x_fit, y_fit = (x, y) if unlabeled is None else (unlabeled, None)
    distiller.compile(optimizer(_steps(len(x_fit), epochs)), None if y_fit is None else _ce())
    keras.utils.set_random_seed(seed)
    if not views:
        x_fit = distiller.cache_teacher_outputs(x_fit)
    distiller.fit(
        x_fit, y_fit, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=list(callbacks)
    )


def run_row(row, data, teacher, seed, epochs, unlabeled=None, curve=False):
    """Trains one student as `row` says; returns (last-epoch test accuracy, seconds[, curve])."""
    (x, y), (x_test, y_test) = data
    keras.utils.set_random_seed(seed + 1)  # the same initial student for every row
    student = student_model(row["student"], x.shape[1:], 10)
    method = row["method"]
    epochs = epochs * row.get("patience", 1)
    callbacks = [Curve(student, x_test, y_test)] if curve else []
    start = time.perf_counter()
    if method in ("labels", "labels+aug"):
        model = student if method == "labels" else keras.Sequential([augmentation(seed), student])
        keras.utils.set_random_seed(seed)
        model.compile(optimizer(_steps(len(x), epochs)), _ce())
        model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=callbacks)
    elif method == "peer":
        import keras.distillation as peer

        distiller = peer.Distiller(teacher, student, peer.LogitsDistillation())
        distiller.compile(optimizer(_steps(len(x), epochs)), _ce())
        keras.utils.set_random_seed(seed)
        distiller.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0)
    elif method == "kd+ta":
        # A teacher assistant (Mirzadeh et al. 2020): a mid-sized model
        # distilled from the teacher, then the student distilled from it.
        keras.utils.set_random_seed(seed + 2)
        assistant = student_model(row.get("assistant", ASSISTANT), x.shape[1:], 10)
        _distil(teacher, assistant, {**row, "method": "kd"}, x, y, epochs, seed, unlabeled)
        keras.utils.set_random_seed(seed)
        _distil(
            assistant, student, {**row, "method": "kd"}, x, y, epochs, seed, unlabeled, callbacks
        )
    else:
        _distil(teacher, student, row, x, y, epochs, seed, unlabeled, callbacks)
    seconds = time.perf_counter() - start
    if curve:
        return accuracy(student, x_test, y_test), callbacks[0].seconds, callbacks[0].points
    return accuracy(student, x_test, y_test), seconds


def rows_for(student, settings, patience, patient_methods=("kd",)):
    """The rows of one student: baselines and KD at the base length, then patient ones."""
    t, slw, alpha = settings["T"], settings["slw"], settings["alpha"]
    kd = {"student": student, "T": t, "slw": slw}
    rows = []
    for p in sorted({1, patience}):
        tag = "" if p == 1 else f" (x{p} epochs)"
        rows += [
            {"name": "labels" + tag, "student": student, "method": "labels", "patience": p},
            {
                "name": "labels + aug" + tag,
                "student": student,
                "method": "labels+aug",
                "patience": p,
            },
            {"name": f"KD, T={t:g}, cached" + tag, **kd, "method": "kd", "patience": p},
            {"name": f"KD + views, T={t:g}" + tag, **kd, "method": "kd+views", "patience": p},
            {
                "name": f"KD + views + mixup {alpha:g}, T={t:g}" + tag,
                **kd,
                "method": "kd+views+mixup",
                "alpha": alpha,
                "patience": p,
            },
        ]
        if p > 1:
            keep = ("labels+aug", *patient_methods)
            rows = [r for r in rows if r.get("patience") != p or r["method"] in keep]
        if p == 1:
            rows.insert(
                2,
                {
                    "name": "KD, T=4, cached (old recipe)",
                    "student": student,
                    "method": "kd",
                    "T": 4.0,
                    "slw": 0.5,
                },
            )
    return rows


def hungry_rows(student, data, seed, args):
    """The data-hungry rows of one student: (row, data, epochs, unlabeled images) each.

    Labels-only sees 10% of the training images with their labels, for ten
    times the epochs (at least as many steps as the distilled run); the
    distilled students see all the images without labels. With `--patience
    P`, the baseline and the `--patient-methods` rows are also run P times
    longer.
    """
    (x, y), test = data
    labeled = np.random.default_rng(seed).permutation(len(x))[: len(x) // 10]
    few = ((x[labeled], y[labeled]), test)
    kd = {"student": student, "T": args.temperature, "slw": 0.0}
    rows = []
    lengths = [args.patience] if args.patient_only else sorted({1, args.patience})
    for p in lengths:
        tag = "" if p == 1 else f" (x{p} epochs)"
        base = {"student": student, "method": "labels+aug", "patience": p}
        rows.append(
            ({"name": "labels + aug, 10% labels" + tag, **base}, few, args.epochs * 10, None)
        )
        kd_rows = [
            {"name": "KD + views, no labels (all images)" + tag, **kd, "method": "kd+views"},
            {
                "name": "KD + views + mixup, no labels (all images)" + tag,
                **kd,
                "method": "kd+views+mixup",
                "alpha": args.mixup,
            },
        ]
        for row in kd_rows:
            if p == 1 or row["method"] in args.patient_methods.split(","):
                rows.append(({**row, "patience": p}, data, args.epochs, x))
    return rows


def load(name, validate):
    data = kdkeras.datasets.load(name)
    if validate:  # a fixed 80/20 split of the training set; the test set is never read
        (x, y), _ = data
        order = np.random.default_rng(1234).permutation(len(x))
        cut = int(0.8 * len(x))
        data = (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])
    return data


def summarize(results, students):
    """Rows of mean ± std accuracy, gain and gap closed against the fair baseline, and seconds.

    The fair baseline of a row is, per seed, the better of the two labels-only
    rows (with and without augmentation) trained for as many epochs: the
    harder baseline, so a gain comes from the teacher, not from the
    augmentation or the schedule.
    """
    table = []
    for student in students:
        per = [r for r in results if r["student"] == student]
        fair = {}
        for r in per:
            if r["settings"]["method"] in ("labels", "labels+aug"):
                key = (r["seed"], r["settings"].get("patience", 1))
                fair[key] = max(fair.get(key, 0.0), r["accuracy"])
        for name in dict.fromkeys(r["row"] for r in per):
            rs = [r for r in per if r["row"] == name]
            keys = [(r["seed"], r["settings"].get("patience", 1)) for r in rs]
            acc = [r["accuracy"] for r in rs]
            gains = [r["accuracy"] - fair[k] for r, k in zip(rs, keys) if k in fair]
            gaps = [
                (r["accuracy"] - fair[k]) / (r["teacher"] - fair[k])
                for r, k in zip(rs, keys)
                if k in fair and r["teacher"] > fair[k]
            ]
            se = np.std(gains, ddof=1) / np.sqrt(len(gains)) if len(gains) > 1 else float("nan")
            table.append(
                {
                    "student": student,
                    "params": rs[0]["params"],
                    "row": name,
                    "test accuracy": kdkeras.comparison.mean_std(acc),
                    "gain vs fair": f"{np.mean(gains):+.4f} (SE {se:.4f})" if gains else "-",
                    "gap closed": kdkeras.comparison.mean_std(gaps) if gaps else "-",
                    "seconds": f"{np.mean([r['seconds'] for r in rs]):.1f}",
                }
            )
    return table


def time_to_accuracy(args):
    """Epochs and seconds for the KD row to reach the fair baseline's final accuracy."""
    data = load(args.data, False)
    results = []
    for seed in range(args.seeds):
        teacher = train_teacher(data, seed, args.teacher_epochs, args.teachers)
        for student in args.students.split(","):
            base = {"student": student, "method": "labels+aug", "patience": args.patience}
            kd = {
                "student": student,
                "method": "kd",
                "T": args.temperature,
                "slw": args.student_loss_weight,
                "patience": args.patience,
            }
            b_acc, b_sec, _ = run_row(base, data, teacher, seed, args.epochs, curve=True)
            k_acc, k_sec, points = run_row(kd, data, teacher, seed, args.epochs, curve=True)
            reached = next(((e, t) for e, t, a in points if a >= b_acc), (None, None))
            results.append(
                {
                    "seed": seed,
                    "student": student,
                    "baseline": b_acc,
                    "baseline_seconds": b_sec,
                    "kd": k_acc,
                    "kd_seconds": k_sec,
                    "epochs_to_baseline": reached[0],
                    "seconds_to_baseline": reached[1],
                    "total_epochs": args.epochs * args.patience,
                    "curve": points,
                }
            )
            print(
                f"  {student}: fair {b_acc:.4f} in {b_sec:.1f} s; KD {k_acc:.4f}, reached it at epoch {reached[0]} ({reached[1] or float('nan'):.1f} s)",
                flush=True,
            )
    table = []
    for student in args.students.split(","):
        rs = [r for r in results if r["student"] == student]
        hit = [r for r in rs if r["epochs_to_baseline"] is not None]
        table.append(
            {
                "student": student,
                "fair baseline (final)": kdkeras.comparison.mean_std([r["baseline"] for r in rs]),
                "baseline seconds": f"{np.mean([r['baseline_seconds'] for r in rs]):.1f}",
                "KD reached it (seeds)": f"{len(hit)}/{len(rs)}",
                "KD epochs to reach": kdkeras.comparison.mean_std(
                    [float(r["epochs_to_baseline"]) for r in hit]
                )
                if hit
                else "-",
                "KD seconds to reach": kdkeras.comparison.mean_std(
                    [r["seconds_to_baseline"] for r in hit]
                )
                if hit
                else "-",
                "epochs in all": rs[0]["total_epochs"],
            }
        )
    print(tables.format_table(table))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        atomic_write_text(
            os.path.join(args.out, "time_to_accuracy.json"),
            json.dumps({"args": vars(args), "results": results}, indent=2) + "\n",
        )
        atomic_write_text(
            os.path.join(args.out, "time_to_accuracy.md"), tables.format_table(table) + "\n"
        )
    return 0


def _grid(text):
    grid = {"T": [4.0], "slw": [0.5], "method": ["kd"], "alpha": [1.0], "patience": [1]}
    for part in filter(None, text.split(";")):
        key, _, values = part.partition("=")
        grid[key] = [v if key == "method" else float(v) for v in values.split(",")]
    return grid


def sweep(args):
    """Validation-split grid over KD settings; baselines first. Never reads the test set."""
    import itertools

    if not args.validate:
        raise SystemExit(
            "accuracy.py: --sweep needs --validate (settings are never chosen on the test set)"
        )
    data = load(args.data, True)
    grid = _grid(args.sweep)
    results = []
    for seed in range(args.seeds):
        teacher = train_teacher(data, seed, args.teacher_epochs, args.teachers)
        print(f"seed {seed}: teacher {accuracy(teacher, *data[1]):.4f}", flush=True)
        for student in args.students.split(","):
            for patience in grid["patience"]:
                rows = [
                    {"student": student, "method": method, "patience": int(patience)}
                    for method in ("labels", "labels+aug")
                ]
                rows += [
                    {
                        "student": student,
                        "method": method,
                        "T": t,
                        "slw": slw,
                        "alpha": alpha,
                        "patience": int(patience),
                    }
                    for method, t, slw, alpha in itertools.product(
                        grid["method"], grid["T"], grid["slw"], grid["alpha"]
                    )
                    if method == "kd+views+mixup" or alpha == grid["alpha"][0]
                ]
                for row in rows:
                    acc, sec = run_row(row, data, teacher, seed, args.epochs)
                    results.append({"seed": seed, **row, "accuracy": acc, "seconds": sec})
                    settings = (
                        f" T={row['T']:g} slw={row['slw']:g} alpha={row['alpha']:g}"
                        if "T" in row
                        else ""
                    )
                    print(
                        f"  {student:7s} {row['method']:15s} x{row['patience']}{settings} "
                        f"{acc:.4f} {sec:6.1f} s",
                        flush=True,
                    )
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        atomic_write_text(
            os.path.join(args.out, "sweep.json"),
            json.dumps({"args": vars(args), "results": results}, indent=2) + "\n",
        )
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="mnist-5k")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--teacher-epochs", type=int, default=30)
    parser.add_argument("--students", default="mlp16,mlp32,mlp64,mlp256,cnn")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--student-loss-weight", type=float, default=0.0)
    parser.add_argument("--mixup", type=float, default=1.0)
    parser.add_argument(
        "--patience", type=int, default=1, help="epochs multiplier of the patient rows"
    )
    parser.add_argument(
        "--time-to-accuracy",
        action="store_true",
        help="epochs and seconds for KD to reach the fair baseline",
    )
    parser.add_argument("--patient-methods", default="kd", help="KD methods also run patient")
    parser.add_argument(
        "--patient-only",
        action="store_true",
        help="with --hungry: only the patient rows (their base-length rows ran before)",
    )
    parser.add_argument(
        "--rows", default=None, help="KD methods to keep besides the baselines (all if absent)"
    )
    parser.add_argument(
        "--teachers", type=int, default=1, help="an ensemble of this many teachers (other seeds)"
    )
    parser.add_argument("--peer", action="store_true", help="add keras.distillation's defaults")
    parser.add_argument("--hungry", action="store_true", help="the 10%%-labels case")
    parser.add_argument("--validate", action="store_true", help="score on a validation split")
    parser.add_argument("--out", default=None, help="write JSON and Markdown here")
    parser.add_argument(
        "--sweep", default=None, help="with --validate: grid 'T=2,4,8;slw=0,0.5;method=kd,kd+views'"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny run for the tests")
    args = parser.parse_args(argv)
    if args.teachers < 1 or (args.peer and args.teachers > 1):
        parser.error(
            f"--teachers: expected 1 or more (1 with --peer: keras.distillation takes one "
            f"teacher); received {args.teachers}"
        )
    if args.patient_only and not (args.hungry and args.patience > 1):
        parser.error(
            "--patient-only: expected with --hungry and --patience above 1; received "
            f"--hungry {'on' if args.hungry else 'off'}, --patience {args.patience}"
        )
    if args.sweep is not None:
        return sweep(args)
    if args.time_to_accuracy:
        return time_to_accuracy(args)

    data = load(args.data, args.validate)
    students = args.students.split(",")
    if args.smoke:
        data = kdkeras.datasets.smoke_subset(data)
        args.seeds, args.epochs, args.teacher_epochs, students = 1, 1, 1, students[:1]
    settings = {"T": args.temperature, "slw": args.student_loss_weight, "alpha": args.mixup}
    results, started = [], time.perf_counter()
    for seed in range(args.seeds):
        teacher = train_teacher(data, seed, args.teacher_epochs, args.teachers)
        t_acc = accuracy(teacher, *data[1])
        print(f"seed {seed}: teacher {t_acc:.4f}", flush=True)
        for student in students:
            if args.hungry:
                rows = hungry_rows(student, data, seed, args)
            else:
                rows = [
                    (r, data, args.epochs, None)
                    for r in rows_for(
                        student, settings, args.patience, args.patient_methods.split(",")
                    )
                ]
                if args.peer:
                    rows.append(
                        (
                            {
                                "name": "keras.distillation (defaults)",
                                "student": student,
                                "method": "peer",
                            },
                            data,
                            args.epochs,
                            None,
                        )
                    )
            for row, row_data, epochs, unlabeled in rows:
                keep = (args.rows or "").split(",") + ["labels", "labels+aug"]
                if args.rows and row["method"] not in keep:
                    continue
                acc, seconds = run_row(row, row_data, teacher, seed, epochs, unlabeled)
                params = student_model(student, data[0][0].shape[1:], 10).count_params()
                results.append(
                    {
                        "seed": seed,
                        "student": student,
                        "params": params,
                        "row": row["name"],
                        "accuracy": acc,
                        "seconds": seconds,
                        "teacher": t_acc,
                        "settings": {k: v for k, v in row.items() if k not in ("name", "student")},
                    }
                )
                print(f"  {student:7s} {row['name']:45s} {acc:.4f}  {seconds:6.1f} s", flush=True)
    table = summarize(results, students)
    teacher_row = kdkeras.comparison.mean_std(
        [
            r["teacher"]
            for r in results
            if r["student"] == students[0] and r["row"] == results[0]["row"]
        ]
    )
    title = (
        f"{args.data}{' (validation split)' if args.validate else ''}, {args.seeds} seed(s), "
        f"students {args.epochs} epochs, "
        f"{'teacher' if args.teachers == 1 else f'ensemble of {args.teachers} teachers'} "
        f"{args.teacher_epochs} epochs ({teacher_row}), "
        f"T={args.temperature}, student_loss_weight={args.student_loss_weight}, mixup={args.mixup}"
        f"{', 10% labels' if args.hungry else ''}; {time.perf_counter() - started:.0f} s in all"
    )
    text = tables.format_table(table)
    print(f"\n{title}\n{text}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        stem = os.path.join(args.out, "hungry" if args.hungry else "accuracy")
        atomic_write_text(
            stem + ".json",
            json.dumps({"title": title, "args": vars(args), "results": results}, indent=2) + "\n",
        )
        atomic_write_text(stem + ".md", f"# {title}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
