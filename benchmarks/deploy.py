"""Deployment benchmark of the demo teacher/student pair against its targets.

Builds a teacher/student pair on mnist-5k (offline) and trains each briefly
with a plain `fit` (no distillation: this measures deployment, not accuracy).
`--pair demo` (the default) is the pair of `kdkeras demo`:
`kdkeras.models.cnn_teacher` (1.2M parameters, BatchNorm, Dropout) and
`kdkeras.models.mlp_student` (784-256-10, 203k parameters). `--pair cnn`
is a CNN pair:

- teacher: Conv32-Conv64-MaxPool-Dropout-Dense(180)-Dropout-Dense(10),
  about 1.68M parameters;
- student: Conv24/2-BN-ReLU-Conv48/2-Dense(96)-Dense(10), about 178k
  parameters.

Then runs `bench.compare` (ONNX export with the parity gate, static
int8 quantization of the student, interleaved benchmark, report) and prints
the measured ratios against the targets:

- student ONNX batch-1 p50 at least 5x faster than teacher ONNX;
- onnxruntime at least 1.5x faster than the `tf.function` Keras call on the
  student at batch 1;
- static int8 student at most 0.3x the float32 file, at least 99% agreement
  with the float32 student on held-out data, faster than float32 at batch 64.

Command:

    .venv/bin/python benchmarks/deploy.py --out deploy_output

Exits 1 when a target is missed. `--smoke` runs a tiny, fast version (the
targets are then not checked).
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

TARGETS = {
    "student_vs_teacher_onnx_p50": (">=", 5.0),
    "onnx_vs_keras_p50": (">=", 1.5),
    "int8_size_ratio": ("<=", 0.3),
    "int8_agreement": (">=", 0.99),
    "int8_vs_float_batch": (">", 1.0),
}


def build_teacher(keras):
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Dropout(0.25),
            keras.layers.Flatten(),
            keras.layers.Dense(180, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(10),
        ],
        name="teacher",
    )


def build_student(keras, width=24):
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(width, 3, strides=2, use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Conv2D(2 * width, 3, strides=2, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(4 * width, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="student",
    )


def _train(keras, model, x, y, epochs):
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="deploy_output", help="output folder")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pair", choices=("demo", "cnn"), default="demo", help="which teacher/student pair"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny and fast; targets not checked")
    args = parser.parse_args(argv)

    import keras

    from kdkeras import datasets
    from kdkeras import deploy as bench
    from kdkeras import models

    keras.utils.set_random_seed(args.seed)
    data = datasets.load("mnist-5k")
    if args.smoke:
        data = datasets.smoke_subset(data)
    (x_train, y_train), (x_test, y_test) = data
    if args.smoke:
        teacher, student = build_student(keras, 8), build_student(keras, 4)
        epochs, repeats, calls = 1, 2, 5
    else:
        if args.pair == "demo":
            teacher, student = models.cnn_teacher(), models.mlp_student()
        else:
            teacher, student = build_teacher(keras), build_student(keras)
        epochs, repeats, calls = args.epochs, args.repeats, args.calls
    _train(keras, teacher, x_train, y_train, epochs)
    _train(keras, student, x_train, y_train, epochs)

    command = "python benchmarks/deploy.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out = bench.compare(
        teacher,
        student,
        x_test,
        y_test,
        args.out,
        calibration_data=x_train[:256],
        calls=calls,
        repeats=repeats,
        threads=args.threads,
        title="Demo pair on mnist-5k: deployment",
        command=command.strip(),
        # The smoke run's 1-epoch model is too unsettled for the 99% gate.
        min_agreement=0.0 if args.smoke else 0.99,
    )
    print(bench.format_results(out["results"]))
    print()
    print(f"teacher params {teacher.count_params():,}, student params {student.count_params():,}")
    missed = []
    for key, (op, target) in TARGETS.items():
        value = out["ratios"][key]
        ok = {">=": value >= target, "<=": value <= target, ">": value > target}[op]
        missed += [] if ok else [key]
        print(f"{key:32s} {value:8.3f}  target {op} {target:<5}  {'ok' if ok else 'MISSED'}")
    print(json.dumps({"ratios": out["ratios"], "report": out["report"]}))
    if args.smoke:
        return 0
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
