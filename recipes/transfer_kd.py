"""Teacher-derived initialisation + distillation on MNIST-5k: does the init help?

Trains one residual CNN teacher (a stem and four identical residual blocks),
derives a student from it with `kdkeras.transfer.shrink` (every second block,
half the channels: weights copied from the teacher) and compares, with the
same student architecture, epochs, batches and seeds:

1. random init + distillation,
2. teacher-derived init + distillation,
3. teacher-derived init, no training,
4. random init trained alone (labels only).

Prints test accuracy after the first epoch and at the end, mean ± std over
`--seeds` (the teacher is trained once and shared by all seeds).

Paper: Sanh, Debut, Chaumond, Wolf. DistilBERT, a distilled version of BERT
(the student is initialised from every second layer of the teacher).
https://arxiv.org/abs/1910.01108

Command and result (2 shared CPU cores, 3 min 38 s; teacher 0.9530, 75,786
parameters; student 9,930; discussion in recipes/README.md):

    python recipes/transfer_kd.py --seeds 5

    | student | test acc. after epoch 1 | test acc. at the end |
    |---|---|---|
    | random init + KD | 0.2686 ± 0.0802 | 0.8134 ± 0.0247 |
    | teacher-derived init + KD | 0.5418 ± 0.0721 | 0.9112 ± 0.0105 |
    | teacher-derived init, no training | - | 0.1060 ± 0.0000 |
    | random init, labels only | 0.2434 ± 0.0527 | 0.8890 ± 0.0270 |

`--smoke` runs a few seconds on a slice of the data (used by the tests).
"""

import argparse
import sys

import keras
import numpy as np
from keras import layers

import kdkeras
from kdkeras import comparison
from kdkeras import transfer


def residual_teacher(blocks=4, channels=32, num_classes=10):
    """A stem conv (stride 2) and `blocks` identical residual blocks."""
    inputs = keras.Input((28, 28, 1))
    x = layers.Conv2D(channels, 3, strides=2, padding="same", name="stem")(inputs)
    x = layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for i in range(blocks):
        y = layers.Conv2D(channels, 3, padding="same", name=f"block{i}_conv1")(x)
        y = layers.BatchNormalization(momentum=0.9, name=f"block{i}_bn1")(y)
        y = layers.ReLU(name=f"block{i}_relu1")(y)
        y = layers.Conv2D(channels, 3, padding="same", name=f"block{i}_conv2")(y)
        y = layers.BatchNormalization(momentum=0.9, name=f"block{i}_bn2")(y)
        x = layers.Add(name=f"block{i}_add")([x, y])
        x = layers.ReLU(name=f"block{i}_out")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, layers.Dense(num_classes, name="logits")(x), name="teacher")


def accuracy(model, x, y, batch_size=500):
    # Direct calls: `predict` would trace a new function for every student.
    logits = [
        keras.ops.convert_to_numpy(model(x[i : i + batch_size], training=False))
        for i in range(0, len(x), batch_size)
    ]
    return float((np.concatenate(logits).argmax(-1) == y).mean())


class TestAccuracy(keras.callbacks.Callback):
    """Records a model's test accuracy at the end of every epoch."""

    def __init__(self, model, x, y):
        super().__init__()
        self.student, self.x, self.y = model, x, y
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        self.history.append(accuracy(self.student, self.x, self.y))


def copy_of(model, weights=None):
    """Same architecture; the given weights, or a fresh random init."""
    clone = keras.models.clone_model(model)
    if weights is not None:
        clone.set_weights(weights)
    return clone


def train(student, teacher, data, args, seed, distil):
    (x_train, y_train), (x_test, y_test) = data
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    record = TestAccuracy(student, x_test, y_test)
    keras.utils.set_random_seed(seed)  # same batches for every variant
    if distil:
        model = kdkeras.Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=kdkeras.LogitsDistillation(temperature=args.temperature),
            student_loss_weight=args.student_loss_weight,
        )
        model.compile(optimizer=keras.optimizers.Adam(args.lr), loss=ce)
        x = model.cache_teacher_outputs(x_train)
    else:
        model = student
        model.compile(optimizer=keras.optimizers.Adam(args.lr), loss=ce)
        x = x_train
    model.fit(
        x, y_train, epochs=args.epochs, batch_size=args.batch_size,
        shuffle=True, callbacks=[record], verbose=0,
    )  # fmt: skip
    return record.history[0], record.history[-1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (default: 3)")
    parser.add_argument("--epochs", type=int, default=6, help="student epochs (default: 6)")
    parser.add_argument("--teacher-epochs", type=int, default=6, help="(default: 6)")
    parser.add_argument("--width", type=float, default=0.5, help="channels kept (default: 0.5)")
    parser.add_argument("--depth", type=int, default=2, help="keep every k-th block (default: 2)")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--student-loss-weight", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--smoke", action="store_true", help="seconds-long run for tests")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"expected --seeds >= 1, received {args.seeds}")

    data = kdkeras.datasets.load("mnist-5k")
    teacher_epochs = args.teacher_epochs
    if args.smoke:
        data = kdkeras.datasets.smoke_subset(data)
        args.epochs, teacher_epochs = 1, 1
    (x_train, y_train), (x_test, y_test) = data

    keras.utils.set_random_seed(0)
    teacher = residual_teacher(channels=8 if args.smoke else 32)
    teacher.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    teacher.fit(x_train, y_train, epochs=teacher_epochs, batch_size=args.batch_size, verbose=0)
    teacher_acc = accuracy(teacher, x_test, y_test)
    derived = transfer.shrink(teacher, width=args.width, depth=args.depth)
    derived_weights = derived.get_weights()
    # Where an untrained derived student loses the teacher's accuracy.
    untrained = {
        "nothing removed": transfer.shrink(teacher, verbose=False),
        f"every {args.depth}. block": transfer.shrink(teacher, depth=args.depth, verbose=False),
        f"{args.width:.0%} of channels": transfer.shrink(teacher, width=args.width, verbose=False),
        "both": derived,
    }
    untrained = {k: accuracy(m, x_test, y_test) for k, m in untrained.items()}

    variants = [
        ("random init + KD", "random", True),
        ("teacher-derived init + KD", "derived", True),
        ("teacher-derived init, no training", "derived", None),
        ("random init, labels only", "random", False),
    ]
    results = {name: ([], []) for name, _, _ in variants}
    for seed in range(args.seeds):
        keras.utils.set_random_seed(100 + seed)
        random_weights = copy_of(derived).get_weights()
        for name, init, distil in variants:
            weights = derived_weights if init == "derived" else random_weights
            student = copy_of(derived, weights)
            if distil is None:
                first = last = accuracy(student, x_test, y_test)
            else:
                first, last = train(student, teacher, data, args, 100 + seed, distil)
            results[name][0].append(first)
            results[name][1].append(last)
        print(
            f"seed {seed}: " + ", ".join(f"{n} {results[n][1][-1]:.4f}" for n, _, _ in variants),
            flush=True,
        )

    print()
    print(
        f"mnist-5k, teacher {teacher.count_params():,} params, {teacher_epochs} epochs, "
        f"test accuracy {teacher_acc:.4f}; student {derived.count_params():,} params "
        f"(width {args.width}, every {args.depth}. block), {args.epochs} epochs, "
        f"{args.seeds} seed(s), T={args.temperature}, "
        f"student_loss_weight={args.student_loss_weight}"
    )
    print()
    print("| student | test acc. after epoch 1 | test acc. at the end |")
    print("|---|---|---|")
    for name, _, distil in variants:
        first, last = results[name]
        print(
            f"| {name} | {'-' if distil is None else comparison.mean_std(first)} | {comparison.mean_std(last)} |"
        )
    print()
    print("| teacher-derived, untrained: removed | test accuracy |")
    print("|---|---|")
    for name, acc in untrained.items():
        print(f"| {name} | {acc:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
