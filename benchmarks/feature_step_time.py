"""Epoch time of feature distillation: kdkeras against `keras.distillation`.

Self-distillation (the student has the teacher's architecture), so the
student's own cost dominates and running it twice per step shows. One
process, four configurations interleaved, the order rotated every round
(after one warm-up round that compiles everything):

- `student`: `student.fit` for one epoch, no teacher;
- `teacher`: the teacher's inference over the same batches, a compiled
  `tf.function` call per batch (XLA where Keras would use it: GPUs);
- `kdkeras`: `kdkeras.Distiller` + `kdkeras.FeatureDistillation` on an
  intermediate layer, one epoch;
- `keras`: `keras.distillation.Distiller` + its `FeatureDistillation` on the
  same layers, one epoch (it runs the student twice per step).

Reports the minimum epoch time per configuration and the ratios
`kdkeras / keras` (target <= 0.8) and `kdkeras / (student + teacher)`
(target <= 1.15).

    python benchmarks/feature_step_time.py --rounds 5

Result (2 shared CPU cores, busy with other jobs: single rounds varied up
to 3x, so only the minima mean anything):

    | configuration | epoch (s) |
    |---|---|
    | student | 1.546 |
    | teacher | 0.353 |
    | kdkeras | 1.844 |
    | keras | 3.195 |

    kdkeras / keras.distillation: 0.58 (target <= 0.80)
    kdkeras / (student + teacher inference): 0.97 (target <= 1.15)
    keras.distillation / (student + teacher inference): 1.68

`--smoke` runs one short round (used to check the script runs).
"""

import argparse
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import kdkeras

L = keras.layers


def make_model(width, name):
    conv = lambda c: [
        L.Conv2D(c, 3, padding="same", use_bias=False),
        L.BatchNormalization(),
        L.ReLU(),
    ]
    return keras.Sequential(
        [keras.Input((28, 28, 1))]
        + conv(width)
        + conv(width)
        + [L.MaxPooling2D()]
        + conv(2 * width)
        + [L.Conv2D(2 * width, 3, padding="same", name="features"), L.ReLU()]
        + [L.MaxPooling2D(), L.Flatten(), L.Dense(128, activation="relu"), L.Dense(10)],
        name=name,
    )


def timed_fit(model, x, y, batch_size):
    start = time.perf_counter()
    model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default: 5)")
    parser.add_argument(
        "--samples", type=int, default=2048, help="samples per epoch (default: 2048)"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--width", type=int, default=32, help="channels of the first block (default: 32)"
    )
    parser.add_argument("--smoke", action="store_true", help="one short round")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.samples, args.width = 1, 256, 8

    (x, y), _ = kdkeras.datasets.load("mnist-5k")
    x, y = x[: args.samples], y[: args.samples]
    gpu = bool(tf.config.list_physical_devices("GPU"))
    keras.utils.set_random_seed(0)
    teacher = make_model(args.width, "teacher")
    sce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    teacher.compile("adam", sce)
    teacher.fit(x, y, epochs=1, batch_size=args.batch_size, verbose=0)

    student = make_model(args.width, "student")
    student.compile("adam", sce)
    ours = kdkeras.Distiller(
        teacher,
        make_model(args.width, "student"),
        kdkeras.FeatureDistillation(teacher_layer_name="features", student_layer_name="features"),
    )
    ours.compile("adam", sce)
    peer = keras.distillation.Distiller(
        teacher,
        make_model(args.width, "student"),
        keras.distillation.FeatureDistillation(
            teacher_layer_name="features", student_layer_name="features"
        ),
    )
    peer.compile("adam", sce)

    infer = tf.function(lambda b: teacher(b, training=False), jit_compile=gpu)
    batches = [tf.constant(x[i : i + args.batch_size]) for i in range(0, len(x), args.batch_size)]

    def teacher_epoch():
        start = time.perf_counter()
        for b in batches:
            out = infer(b)
        np.asarray(out)  # wait for the device
        return time.perf_counter() - start

    configs = {
        "student": lambda: timed_fit(student, x, y, args.batch_size),
        "teacher": teacher_epoch,
        "kdkeras": lambda: timed_fit(ours, x, y, args.batch_size),
        "keras": lambda: timed_fit(peer, x, y, args.batch_size),
    }
    names = list(configs)
    for name in names:  # warm-up: compile everything
        configs[name]()
    times = {name: [] for name in names}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            times[name].append(configs[name]())
        print(f"round {r}: " + ", ".join(f"{n} {times[n][-1]:.3f}s" for n in names), flush=True)

    best = {name: min(values) for name, values in times.items()}
    reference = best["student"] + best["teacher"]
    print(
        f"\n{args.samples} samples, batch {args.batch_size}, width {args.width}, "
        f"{args.rounds} rounds, {'GPU' if gpu else 'CPU'}, minimum epoch time per configuration"
    )
    print("| configuration | epoch (s) |")
    print("|---|---|")
    for name in names:
        print(f"| {name} | {best[name]:.3f} |")
    print(f"\nkdkeras / keras.distillation: {best['kdkeras'] / best['keras']:.2f} (target <= 0.80)")
    print(
        f"kdkeras / (student + teacher inference): {best['kdkeras'] / reference:.2f} (target <= 1.15)"
    )
    print(f"keras.distillation / (student + teacher inference): {best['keras'] / reference:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
