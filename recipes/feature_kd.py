"""Feature distillation on MNIST-5k: logits KD plus FitNets, AT, RKD, PKT, SP, CRD.

A CNN teacher (four 3x3 convolutions, 16-16-32-32 channels at 28x28 and
14x14, a 128-unit embedding) and a thinner, shallower student (two strided
convolutions with 8 and 16 channels, at 14x14 and 7x7, a 32-unit
embedding). Their feature shapes differ in channels, spatial size and
units, so FitNets gets an automatic adapter (1x1 convolution plus 2x
upsampling, printed when it is built); AT pools the teacher's map to the
student's size; RKD, PKT and SP compare batch relations and need none; CRD
learns its own embedding heads (and keeps a memory bank of every training
sample's embeddings).

For each seed, every student starts from the same initial weights and sees
the same batches: trained alone, with logits KD, and with logits KD plus one
feature term. The teacher is trained once (seed 0). Prints test accuracy as
mean ± std over seeds, the share of the teacher/student gap closed,
(method - alone) / (teacher - alone), and the mean epoch time (epochs after
the first, which compiles).

Term weights follow the papers / RepDistiller (relative to a cross-entropy
weight of 1): FitNets 100, AT 1000, RKD 1 (distance 25, angle 50), PKT
30000, SP 3000, CRD 0.8 (with 1024 negatives, not the paper's 16384); logits
KD at T=4. No tuning was done here.

Papers:
    Hinton et al. 2015, https://arxiv.org/abs/1503.02531;
    Romero et al. 2015 (FitNets), https://arxiv.org/abs/1412.6550;
    Zagoruyko & Komodakis 2017 (AT), https://arxiv.org/abs/1612.03928;
    Park et al. 2019 (RKD), https://arxiv.org/abs/1904.05068;
    Passalis & Tefas 2018 (PKT), https://arxiv.org/abs/1803.10837;
    Tung & Mori 2019 (SP), https://arxiv.org/abs/1907.09682;
    Tian et al. 2020 (CRD), https://arxiv.org/abs/1910.10699.

Command and result (2 shared CPU cores, 5 min 16 s; teacher 0.9730; see
recipes/README.md, section "Feature distillation"):

    python recipes/feature_kd.py --seeds 3 --epochs 10

    | method | test accuracy | gap closed | epoch time (s) |
    |---|---|---|---|
    | alone | 0.9540 ± 0.0070 | 0.0000 ± 0.0000 | 0.47 |
    | KD | 0.9523 ± 0.0067 | -0.1313 ± 0.2519 | 1.15 |
    | KD + FitNets | 0.9527 ± 0.0025 | -0.1717 ± 0.4161 | 0.96 |
    | KD + AT | 0.9523 ± 0.0015 | -0.2298 ± 0.5889 | 1.12 |
    | KD + RKD | 0.9617 ± 0.0051 | 0.2399 ± 0.6819 | 1.59 |
    | KD + PKT | 0.9573 ± 0.0021 | 0.0947 ± 0.3325 | 1.16 |
    | KD + SP | 0.9677 ± 0.0055 | 0.5909 ± 0.5242 | 1.41 |

CRD was measured in a shorter run (51 s; teacher 3 epochs, 0.9600):

    python recipes/feature_kd.py --seeds 2 --epochs 4 --teacher-epochs 3 --methods CRD

    | method | test accuracy | gap closed | epoch time (s) |
    |---|---|---|---|
    | alone | 0.9345 ± 0.0035 | 0.0000 ± 0.0000 | 0.28 |
    | KD | 0.9160 ± 0.0042 | -0.7306 ± 0.0736 | 0.86 |
    | KD + CRD | 0.9170 ± 0.0057 | -0.6871 ± 0.0121 | 2.24 |

`--smoke` runs a few seconds on a slice of the data (used by the tests).
"""

import argparse
import sys

import keras
import numpy as np

import kdkeras
from kdkeras import comparison

L = keras.layers

# name -> (term for n training samples, weight); n matters to CRD only.
METHODS = {
    "FitNets": (
        lambda n: kdkeras.FeatureDistillation(
            teacher_layer_name="t_conv4", student_layer_name="s_conv2"
        ),
        100.0,
    ),
    "AT": (lambda n: kdkeras.AttentionTransfer("t_conv4", "s_conv2"), 1000.0),
    "RKD": (lambda n: kdkeras.RKD("t_emb", "s_emb"), 1.0),
    "PKT": (lambda n: kdkeras.PKT("t_emb", "s_emb"), 30000.0),
    "SP": (lambda n: kdkeras.SimilarityPreserving("t_conv4", "s_conv2"), 3000.0),
    "CRD": (lambda n: kdkeras.CRD("t_emb", "s_emb", num_samples=n, nce_k=NCE_K), 0.8),
}
# Negatives per sample for CRD: the paper's 16384 are sized for a GPU; on
# 2 CPU cores each step would cost seconds.
NCE_K = 1024


def make_teacher():
    conv = lambda c, name: L.Conv2D(c, 3, padding="same", activation="relu", name=name)
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            conv(16, "t_conv1"),
            conv(16, "t_conv2"),
            L.MaxPooling2D(name="t_pool1"),
            conv(32, "t_conv3"),
            conv(32, "t_conv4"),
            L.MaxPooling2D(name="t_pool2"),
            L.Flatten(),
            L.Dense(128, activation="relu", name="t_emb"),
            L.Dense(10, name="t_logits"),
        ],
        name="teacher",
    )


def make_student():
    conv = lambda c, name: L.Conv2D(c, 3, strides=2, padding="same", activation="relu", name=name)
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            conv(8, "s_conv1"),
            conv(16, "s_conv2"),
            L.Flatten(),
            L.Dense(32, activation="relu", name="s_emb"),
            L.Dense(10, name="s_logits"),
        ],
        name="student",
    )


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=500, verbose=0), -1) == y))


def train(model, x, y, epochs, seed):
    """Fits `model` (a student or a Distiller); returns the mean epoch time."""
    sce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss=sce)
    timer = comparison.EpochTimer()
    keras.utils.set_random_seed(1000 + seed)  # same batches for every method
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0, callbacks=[timer])
    return float(np.mean(timer.times[1:] if len(timer.times) > 1 else timer.times))


def run_seed(seed, teacher, data, epochs, methods):
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    initial = make_student().get_weights()
    results = {}
    for method in ["alone", "KD"] + methods:
        student = make_student()
        student.set_weights(initial)
        if method == "alone":
            seconds = train(student, x_train, y_train, epochs, seed)
        else:
            terms, weights = [kdkeras.LogitsDistillation(temperature=4.0)], [1.0]
            if method != "KD":
                make_term, weight = METHODS[method]
                terms.append(make_term(len(x_train)))
                weights.append(weight)
            distiller = kdkeras.Distiller(
                teacher, student, terms, distillation_loss_weights=weights, student_loss_weight=0.5
            )
            seconds = train(distiller, x_train, y_train, epochs, seed)
        results[method] = (accuracy(student, x_test, y_test), seconds)
        print(
            f"seed {seed} {method:>8}: accuracy {results[method][0]:.4f}, epoch {seconds:.2f} s",
            flush=True,
        )
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (default: 3)")
    parser.add_argument("--epochs", type=int, default=10, help="student epochs (default: 10)")
    parser.add_argument("--teacher-epochs", type=int, default=4, help="teacher epochs (default: 4)")
    parser.add_argument("--methods", default=",".join(METHODS), help="feature terms to compare")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run for tests")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if args.seeds < 1 or args.epochs < 1 or unknown:
        parser.error(
            f"expected --seeds, --epochs >= 1 and methods in {list(METHODS)}; received {args}"
        )

    data = kdkeras.datasets.load("mnist-5k")
    epochs, teacher_epochs = args.epochs, args.teacher_epochs
    if args.smoke:
        data = kdkeras.datasets.smoke_subset(data, 128, 64)
        epochs, teacher_epochs = 1, 1
    (x_train, y_train), (x_test, y_test) = data

    keras.utils.set_random_seed(0)
    teacher = make_teacher()
    train(teacher, x_train, y_train, teacher_epochs, seed=0)
    teacher_acc = accuracy(teacher, x_test, y_test)
    print(f"teacher: accuracy {teacher_acc:.4f}, {teacher.count_params():,} params", flush=True)
    print(f"student: {make_student().count_params():,} params", flush=True)

    per_seed = [run_seed(seed, teacher, data, epochs, methods) for seed in range(args.seeds)]
    print(
        f"\nmnist-5k, {args.seeds} seed(s), teacher {teacher_epochs} epochs ({teacher_acc:.4f}), students {epochs} epochs"
    )
    print("| method | test accuracy | gap closed | epoch time (s) |")
    print("|---|---|---|---|")
    for method in per_seed[0]:
        accs = [r[method][0] for r in per_seed]
        gaps = [
            (r[method][0] - r["alone"][0]) / (teacher_acc - r["alone"][0])
            if teacher_acc != r["alone"][0]
            else float("nan")
            for r in per_seed
        ]
        label = method if method in ("alone", "KD") else f"KD + {method}"
        print(
            f"| {label} | {comparison.mean_std(accs)} | {comparison.mean_std(gaps)} | "
            f"{np.mean([r[method][1] for r in per_seed]):.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
