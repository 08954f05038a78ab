"""One distillation run of the resume test (see tests/test_resume.py).

`python tests/_resume_worker.py OUT BACKUP_DIR [--kill-epoch E --kill-step S]`
trains a tiny Distiller for 3 epochs with `kdkeras.callbacks.BackupAndRestore`
and deterministic ops; with `--kill-epoch` the process SIGKILLs itself after
step S of epoch E (0-based). Writes the student's weights and the epochs
this run trained to OUT.
"""

import argparse
import json
import os
import signal
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

EPOCHS = 3


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("backup_dir")
    parser.add_argument("--kill-epoch", type=int, default=None)
    parser.add_argument("--kill-step", type=int, default=2)
    args = parser.parse_args(argv)

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    import keras

    import kdkeras

    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8)).astype("float32")
    y = rng.integers(0, 4, size=96).astype("int64")
    teacher = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(4)]
    )
    student = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(4)]
    )
    distiller = kdkeras.Distiller(
        teacher, student, kdkeras.LogitsDistillation(temperature=2.0), student_loss_weight=0.3
    )
    # Adam: its moments must be restored too for the runs to agree.
    distiller.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )

    class Crash(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == args.kill_epoch and batch == args.kill_step:
                os.kill(os.getpid(), signal.SIGKILL)

    backup = kdkeras.callbacks.BackupAndRestore(args.backup_dir)
    history = distiller.fit(
        x,
        y,
        batch_size=16,
        epochs=EPOCHS,
        shuffle=False,
        verbose=0,
        callbacks=[backup, Crash()],
    )
    weights = np.concatenate([np.ravel(w) for w in student.get_weights()])
    np.save(os.path.join(args.out, "weights.npy"), weights)
    with open(os.path.join(args.out, "epochs.json"), "w") as f:
        json.dump(history.epoch, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
