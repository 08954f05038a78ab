"""One process of the multi-worker test (see tests/test_multiworker.py).

`python tests/_mw_worker.py OUT_DIR` trains a tiny student twice (teacher
online, then from cached teacher outputs) and saves its weights under
OUT_DIR as `online_<i>.npy` / `cached_<i>.npy`. With TF_CONFIG set it runs
under `tf.distribute.MultiWorkerMirroredStrategy`; with `--single` it runs
on one device with the same global batch, for reference.
"""

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

GLOBAL_BATCH = 16
EPOCHS = 2


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = rng.integers(0, 4, size=64).astype("int64")
    return x, y


def _distiller():
    import keras

    import kdkeras

    keras.utils.set_random_seed(1)
    teacher = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(4)]
    )
    # Synchronized BatchNorm: batch statistics over the global batch, so a
    # replica's update equals the single-device one.
    student = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(6),
            keras.layers.BatchNormalization(synchronized=True),
            keras.layers.Activation("relu"),
            keras.layers.Dense(4),
        ]
    )
    distiller = kdkeras.Distiller(
        teacher,
        student,
        kdkeras.LogitsDistillation(temperature=2.0),
        student_loss_weight=0.3,
    )
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return distiller


def _flat(model):
    return np.concatenate([np.ravel(w) for w in model.get_weights()])


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--single", action="store_true")
    args = parser.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    if args.single:
        strategy, index = tf.distribute.get_strategy(), "single"
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        index = str(strategy.cluster_resolver.task_id)
        assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    x, y = _data()
    for mode in ("online", "cached"):
        with strategy.scope():
            distiller = _distiller()
        if mode == "online":
            np.save(os.path.join(args.out, f"initial_{index}.npy"), _flat(distiller.student))
        inputs = distiller.cache_teacher_outputs(x) if mode == "cached" else x
        history = distiller.fit(
            inputs, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0
        )
        np.save(os.path.join(args.out, f"{mode}_{index}.npy"), _flat(distiller.student))
        np.save(
            os.path.join(args.out, f"{mode}_{index}_loss.npy"),
            np.asarray(history.history["loss"], "float64"),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
