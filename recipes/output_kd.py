"""Output distillation (Hinton KD) on MNIST-5k: does the distilled student win?

Trains, for each seed, a 1.2M-parameter CNN teacher, a 203k-parameter MLP
student (784-256-10) from scratch, and the same student (same initial
weights, same batches) distilled from the teacher with
`kdkeras.LogitsDistillation` (teacher outputs cached once, see
`Distiller.cache_teacher_outputs`). Prints test
accuracy as mean ± std over seeds and the share of the teacher/student gap
that distillation closes, (KD - scratch) / (teacher - scratch).

Paper: Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network.
https://arxiv.org/abs/1503.02531

Command and result (2 shared CPU cores, about 2.5 minutes):

    python recipes/output_kd.py --seeds 3

    mnist-5k, 3 seed(s), teacher 6 epochs, students 30 epochs, T=4.0, student_loss_weight=0.5
    | model | params | test accuracy | teacher agreement | epoch time (s) |
    |---|---|---|---|---|
    | teacher | 1,200,010 | 0.9717 ± 0.0025 | 1.0000 ± 0.0000 | 4.0266 ± 1.5961 |
    | student (scratch) | 203,530 | 0.9480 ± 0.0026 | 0.9513 ± 0.0091 | 0.2534 ± 0.0635 |
    | student (distilled) | 203,530 | 0.9520 ± 0.0010 | 0.9607 ± 0.0085 | 0.2539 ± 0.0551 |

    gap closed (KD - scratch) / (teacher - scratch): 0.1500 ± 0.1323

The distilled student's epoch costs what the scratch student's does because
the teacher's outputs are cached once (the caching pass is not in the epoch
time).

`--standardize` adds a student distilled with logit standardization
(Sun et al. 2024, https://arxiv.org/abs/2403.01427) at base temperature 2
(`--base-temperature`); a shorter run (2 min 39 s, see recipes/README.md):

    python recipes/output_kd.py --seeds 2 --epochs 10 --teacher-epochs 3 --standardize

    | model | params | test accuracy | teacher agreement |
    |---|---|---|---|
    | teacher | 1,200,010 | 0.9660 ± 0.0028 | 1.0000 ± 0.0000 |
    | student (scratch) | 203,530 | 0.9405 ± 0.0021 | 0.9405 ± 0.0007 |
    | student (distilled) | 203,530 | 0.9390 ± 0.0014 | 0.9490 ± 0.0014 |
    | student (distilled, standardized) | 203,530 | 0.9505 ± 0.0007 | 0.9520 ± 0.0000 |

`--smoke` runs a few seconds on a slice of the data (used by the tests).
"""

import argparse
import sys

import kdkeras
from kdkeras import comparison
from kdkeras import models
from kdkeras.utils import tables


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (default: 3)")
    parser.add_argument("--epochs", type=int, default=30, help="student epochs (default: 30)")
    parser.add_argument("--teacher-epochs", type=int, default=6, help="teacher epochs (default: 6)")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--student-loss-weight", type=float, default=0.5)
    parser.add_argument(
        "--student",
        choices=("mlp", "cnn"),
        default="mlp",
        help="mlp: 784-256-10 (203k parameters); cnn: 20k-parameter CNN",
    )
    parser.add_argument(
        "--standardize",
        action="store_true",
        help="add a student distilled with logit standardization (Sun et al. 2024)",
    )
    parser.add_argument(
        "--base-temperature",
        type=float,
        default=2.0,
        help="temperature of the standardized student (default: 2.0, the paper's)",
    )
    parser.add_argument("--data", default="mnist-5k")
    parser.add_argument(
        "--backup-dir",
        help="back up every epoch here; rerun the same command after a crash to resume",
    )
    parser.add_argument("--smoke", action="store_true", help="seconds-long run for tests")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"expected --seeds >= 1, received {args.seeds}")

    data = kdkeras.datasets.load(args.data)
    epochs, teacher_epochs = args.epochs, args.teacher_epochs
    if args.smoke:
        data = kdkeras.datasets.smoke_subset(data)
        epochs, teacher_epochs = 1, 1

    variants = None
    if args.standardize:
        variants = {
            "student (distilled, standardized)": kdkeras.LogitsDistillation(
                temperature=args.base_temperature, standardize=True
            )
        }
    per_seed = []
    for seed in range(args.seeds):
        result = comparison.compare_output_kd(
            data,
            epochs=epochs,
            teacher_epochs=teacher_epochs,
            temperature=args.temperature,
            student_loss_weight=args.student_loss_weight,
            seed=seed,
            make_student=models.mlp_student if args.student == "mlp" else models.cnn_student,
            cache_teacher=True,
            backup_dir=args.backup_dir,
            variants=variants,
        )
        rows = result["rows"]
        per_seed.append(rows)
        accs = ", ".join(f"{r['model']} {r['test_accuracy']:.4f}" for r in rows)
        print(f"seed {seed}: {accs}", flush=True)

    table = []
    for i, name in enumerate(r["model"] for r in per_seed[0]):
        table.append(
            {
                "model": name,
                "params": per_seed[0][i]["params"],
                "test accuracy": comparison.mean_std(
                    [rows[i]["test_accuracy"] for rows in per_seed]
                ),
                "teacher agreement": comparison.mean_std(
                    [rows[i]["teacher_agreement"] for rows in per_seed]
                ),
                "epoch time (s)": comparison.mean_std(
                    [rows[i]["epoch_time_s"] for rows in per_seed]
                ),
            }
        )
    print()
    standardized = f", standardized T={args.base_temperature}" if args.standardize else ""
    print(
        f"{args.data}, {args.seeds} seed(s), teacher {teacher_epochs} epochs, students "
        f"{epochs} epochs, T={args.temperature}{standardized}, "
        f"student_loss_weight={args.student_loss_weight}"
    )
    print(tables.format_table(table))
    print()
    for i, row in enumerate(per_seed[0][2:], start=2):
        gaps = []
        for rows in per_seed:
            teacher, scratch = rows[0]["test_accuracy"], rows[1]["test_accuracy"]
            span = teacher - scratch
            gaps.append((rows[i]["test_accuracy"] - scratch) / span if span else float("nan"))
        print(
            f"gap closed by {row['model']}, (KD - scratch) / (teacher - scratch): "
            f"{comparison.mean_std(gaps)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
