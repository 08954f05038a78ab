"""Accuracy of the drop-in switch: `keras.distillation` vs kdkeras, same arguments.

For each seed: one CNN teacher (1.2M parameters) trained on MNIST-5k, then the
same 203k-parameter MLP student (same initial weights, same batches) trained
three ways:

  scratch             labels only
  keras.distillation  `keras.distillation.Distiller(teacher, student,
                      LogitsDistillation(temperature=T), student_loss_weight=a)`
                      with its default `loss="kl_divergence"`
  kdkeras             the same call with `import kdkeras` instead

The two distillers receive identical arguments; only the import differs.
Keras's default `"kl_divergence"` string resolves to a plain function, so its
KD term compares temperature-scaled raw logits clipped into [1e-7, 1] and
skips the softmax and T^2; kdkeras computes KL between the softened
distributions.

Command and result (2 shared CPU cores, 3.4 minutes):

    python benchmarks/peer_accuracy.py --seeds 3

    MNIST-5k, 3 seed(s), teacher 6 epochs, students 30 epochs, T=4.0, student_loss_weight=0.5
    | model | test accuracy |
    |---|---|
    | teacher | 0.9717 ± 0.0025 |
    | scratch | 0.9480 ± 0.0026 |
    | keras.distillation | 0.9413 ± 0.0047 |
    | kdkeras | 0.9520 ± 0.0010 |
"""

import argparse
import sys

import keras
import numpy as np

import kdkeras
from kdkeras.models import cnn_teacher
from kdkeras.models import mlp_student
from kdkeras.utils.tables import format_table


def _ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _accuracy(model, x, y):
    logits = np.concatenate(
        [np.asarray(model(x[i : i + 500], training=False)) for i in range(0, len(x), 500)]
    )
    return float((logits.argmax(-1) == y).mean())


def run_seed(data, seed, epochs, teacher_epochs, temperature, alpha):
    import keras.distillation as peer

    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    teacher = cnn_teacher()
    teacher.compile(optimizer="adam", loss=_ce())
    teacher.fit(x_train, y_train, epochs=teacher_epochs, batch_size=64, verbose=0)

    keras.utils.set_random_seed(seed + 1)
    initial = mlp_student().get_weights()
    results = {"teacher": _accuracy(teacher, x_test, y_test)}
    for name in ("scratch", "keras.distillation", "kdkeras"):
        student = mlp_student()
        student.set_weights(initial)
        if name == "scratch":
            model = student
        else:
            module = peer if name == "keras.distillation" else kdkeras
            model = module.Distiller(
                teacher,
                student,
                module.LogitsDistillation(temperature=temperature),
                student_loss_weight=alpha,
            )
        model.compile(optimizer="adam", loss=_ce())
        keras.utils.set_random_seed(seed)
        model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
        results[name] = _accuracy(student, x_test, y_test)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description="keras.distillation vs kdkeras, same arguments.")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--student-loss-weight", type=float, default=0.5)
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests")
    args = parser.parse_args(argv)

    data = kdkeras.datasets.load("mnist-5k")
    epochs, teacher_epochs, seeds = args.epochs, args.teacher_epochs, args.seeds
    if args.smoke:
        data = kdkeras.datasets.smoke_subset(data)
        epochs, teacher_epochs, seeds = 1, 1, 1
    per_seed = []
    for seed in range(seeds):
        per_seed.append(
            run_seed(data, seed, epochs, teacher_epochs, args.temperature, args.student_loss_weight)
        )
        print(
            f"seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in per_seed[-1].items()),
            flush=True,
        )

    rows = []
    for name in per_seed[0]:
        values = np.array([r[name] for r in per_seed])
        std = values.std(ddof=1) if len(values) > 1 else 0.0
        rows.append({"model": name, "test accuracy": f"{values.mean():.4f} ± {std:.4f}"})
    print(
        f"\nMNIST-5k, {seeds} seed(s), teacher {teacher_epochs} epochs, students {epochs} epochs, "
        f"T={args.temperature}, student_loss_weight={args.student_loss_weight}"
    )
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
