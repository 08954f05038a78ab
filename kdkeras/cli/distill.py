"""`kdkeras distill TEACHER --data DATA --out DIR`: a trained teacher to a deployed student.

Parsing and printing only; the work is `kdkeras.pipeline.distill`. Rerun
the same command after a crash or Ctrl-C to resume: training continues from
the last finished epoch and finished stages are skipped.
"""

import shlex

from kdkeras.cli.arguments import positive_int

__all__ = ["add_parser", "run"]

_SMOKE_EPOCHS = 2


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "distill",
        help="distil a trained teacher into a small student, export, quantize, benchmark",
        description=(
            "Distil a trained Keras teacher into a smaller student on your data, "
            "export both to ONNX (parity-gated), quantize the student to int8 "
            "(agreement-gated), benchmark them with onnxruntime, and write "
            "student.keras, student.onnx, student.int8.onnx, teacher.onnx, "
            "results.json and report.md into --out. Rerun the same command to "
            "resume after a crash."
        ),
    )
    parser.add_argument("teacher", help="the teacher: a .keras file, a .h5 file or a SavedModel")
    parser.add_argument(
        "--data",
        required=True,
        help="mnist-5k, digits, mnist, an .npz file (x_train, y_train[, x_test, y_test]; "
        "y_train optional) or a folder of images with one sub-folder per class",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--student",
        default=None,
        help="shrink:width=0.5,depth=2,rank=8 (from the teacher's weights), a .keras file, "
        "mlp or cnn (default: derived from the teacher, about 4x fewer parameters)",
    )
    parser.add_argument(
        "--recipe", default="recommended", help="kd, dkd, dist, feature or recommended (default)"
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=None, help="epochs (default: 20; 2 with --smoke)"
    )
    parser.add_argument("--batch-size", type=positive_int, default=64, help="default: 64")
    parser.add_argument(
        "--quantize",
        choices=["static", "dynamic", "none"],
        default="static",
        help="int8 student (default: static)",
    )
    parser.add_argument(
        "--backup-dir", default=None, help="per-epoch backups (default: OUT/backup)"
    )
    parser.add_argument("--seed", type=int, default=0, help="default: 0")
    parser.add_argument(
        "--unsafe-deserialization",
        action="store_true",
        help="load trusted .keras files that hold code (Lambda layers)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny run for tests: a few hundred samples, 2 epochs"
    )
    parser.set_defaults(func=run)
    return parser


def run(args):
    from kdkeras import pipeline

    epochs = args.epochs or (_SMOKE_EPOCHS if args.smoke else 20)
    result = pipeline.distill(
        args.teacher,
        args.data,
        args.out,
        student=args.student,
        recipe=args.recipe,
        epochs=epochs,
        batch_size=args.batch_size,
        quantize=args.quantize,
        backup_dir=args.backup_dir,
        safe_mode=not args.unsafe_deserialization,
        seed=args.seed,
        smoke=args.smoke,
        command=shlex.join(["kdkeras", *args.argv]),
    )
    print()
    print(result.table())
    print()
    for note in result.notes:
        print(f"Note: {note}")
    print("Stages: " + "; ".join(f"{k}: {v}" for k, v in result.stages.items()))
    print(f"Wrote {', '.join(result.paths)} into {result.out_dir}")
    print(f"Took {result.seconds:.1f} s")
    return 0
