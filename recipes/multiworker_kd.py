"""Knowledge distillation on several workers (MultiWorkerMirroredStrategy).

Shows: a `kdkeras.Distiller` trained with `fit()` under
`tf.distribute.MultiWorkerMirroredStrategy`, each worker a process with its
own `TF_CONFIG`. Here all workers run on this machine (127.0.0.1); across
machines, start the same worker command on each host with a `TF_CONFIG`
naming every host (docs/reliability.md, "Multi-worker training"). The
student's BatchNorm uses synchronized statistics, so N workers train the
same student as one device on the same global batch; every worker ends with
bit-identical weights. With `--backup-dir`, a killed run resumes from its
last completed epoch when started again.

Paper: Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network.
https://arxiv.org/abs/1503.02531

Command:

    python recipes/multiworker_kd.py --workers 2 --epochs 5 --out runs/mw

Expected result: both workers print the same accuracies and the same weight
checksum. With the command above (mnist-5k, 5 teacher and 5 distillation
epochs, 2 local workers, about 1 minute on 2 CPU cores): teacher 0.937,
student (one hidden layer of 32 units) 0.842 test accuracy. `--smoke` runs a
tiny version in seconds.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def launch(argv, workers, timeout):
    """Starts `workers` local processes of this script with a TF_CONFIG each."""
    import kdkeras

    procs = []
    for config in kdkeras.distill.multiworker.local_tf_configs(workers):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps(config)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        procs.append(
            subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--worker", *argv], env=env
            )
        )
    deadline = time.monotonic() + timeout
    codes = []
    try:
        for proc in procs:
            codes.append(proc.wait(timeout=max(1.0, deadline - time.monotonic())))
    except subprocess.TimeoutExpired:
        print(f"multiworker_kd: workers ran past {timeout} s", file=sys.stderr)
        return 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return 0 if all(code == 0 for code in codes) else 1


def _mlp(widths, classes, name, batch_norm=False):
    import keras

    layers = [keras.Input((28, 28, 1)), keras.layers.Flatten()]
    for width in widths:
        layers.append(keras.layers.Dense(width))
        if batch_norm:
            # Synchronized: statistics over the global batch, as on one device.
            layers.append(keras.layers.BatchNormalization(synchronized=True))
        layers.append(keras.layers.Activation("relu"))
    layers.append(keras.layers.Dense(classes))
    return keras.Sequential(layers, name=name)


def run_worker(args):
    """One worker: train the teacher, then distill the student."""
    import keras
    import numpy as np
    import tensorflow as tf

    import kdkeras

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = strategy.cluster_resolver.task_id
    chief = task == 0
    data = kdkeras.datasets.load(args.data)
    if args.smoke:
        data = kdkeras.datasets.smoke_subset(data, 512, 256)
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(args.seed)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    teacher_widths, student_widths = ((32,), (8,)) if args.smoke else ((256, 256), (32,))
    with strategy.scope():
        teacher = _mlp(teacher_widths, 10, "teacher")
        teacher.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
    # A plain model under this strategy needs the fix that Distiller applies.
    kdkeras.enable_multi_worker_fit()
    verbose = 2 if chief and not args.smoke else 0
    teacher.fit(
        x_train, y_train, batch_size=args.batch_size, epochs=args.teacher_epochs, verbose=verbose
    )
    with strategy.scope():
        student = _mlp(student_widths, 10, "student", batch_norm=True)
        distiller = kdkeras.Distiller(
            teacher,
            student,
            kdkeras.LogitsDistillation(temperature=args.temperature),
            student_loss_weight=0.1,
        )
        distiller.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
    callbacks = []
    if args.backup_dir:
        callbacks.append(kdkeras.callbacks.BackupAndRestore(args.backup_dir))
    distiller.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        callbacks=callbacks,
        verbose=verbose,
    )
    # evaluate() runs collectives: every worker takes part.
    teacher_acc = teacher.evaluate(x_test, y_test, batch_size=args.batch_size, verbose=0)[1]
    results = distiller.evaluate(
        x_test, y_test, batch_size=args.batch_size, verbose=0, return_dict=True
    )
    checksum = float(sum(np.abs(w).sum() for w in student.get_weights()))
    print(
        f"worker {task}: teacher accuracy {teacher_acc:.4f}, student accuracy "
        f"{results['accuracy']:.4f}, weight checksum {checksum:.6f}",
        flush=True,
    )
    if chief and args.out:
        from kdkeras.deploy import export

        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "student.keras")
        export(student, path, format="keras")
        print(f"worker {task}: saved {path}", flush=True)
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="local worker processes")
    parser.add_argument("--data", default="mnist-5k")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--teacher-epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch size")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backup-dir", default=None, help="back up every epoch; resume from it")
    parser.add_argument("--out", default=None, help="folder for student.keras (chief)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds for all workers")
    parser.add_argument("--smoke", action="store_true", help="a tiny, fast run")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.teacher_epochs, args.batch_size = 1, 1, 64
    if args.worker:
        if "TF_CONFIG" not in os.environ:
            parser.error("--worker needs TF_CONFIG (see docs/reliability.md)")
        return run_worker(args)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1. Received: --workers={args.workers}")
    return launch(argv, args.workers, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
