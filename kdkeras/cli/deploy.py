"""The `kdkeras export` and `kdkeras bench` subcommands.

`kdkeras export MODEL.keras --format onnx --out DIR [--quantize static]
[--data NAME]` prints one JSON line with the parity figures and exits with
status 1 when the parity gate fails. `kdkeras bench A.onnx B.onnx ...
--data NAME [--json OUT] [--report DIR]` prints a table. Bad input (a
missing file, a file that is no model, data that does not fit the model)
raises `ValueError`, which `kdkeras.cli` prints as one line.
"""

import json
import os
import sys
import warnings

from kdkeras.cli.arguments import positive_int

__all__ = ["add_parsers", "run_bench", "run_export"]


def add_parsers(subparsers):
    """Adds `export` and `bench` to the `kdkeras` argument parser."""
    p = subparsers.add_parser(
        "export",
        help="export a .keras model with a parity gate (and int8)",
        description="Export a .keras model; exits 1 when parity fails.",
    )
    p.add_argument("model", help="the .keras file")
    p.add_argument(
        "--format",
        default="onnx",
        choices=["onnx", "tflite", "saved_model", "keras"],
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--quantize",
        choices=["dynamic", "static"],
        default=None,
        help="also write an int8 model (needs --data)",
    )
    p.add_argument(
        "--data",
        default=None,
        help="dataset name for parity (test split) and calibration (train "
        "split); random inputs when absent",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (<= 18)")
    p.add_argument(
        "--unsafe-deserialization",
        action="store_true",
        help="load a trusted .keras file that holds code (Lambda layers)",
    )
    p.add_argument("--atol", type=float, default=1e-4, help="largest absolute difference")
    p.add_argument(
        "--rtol",
        type=float,
        default=1e-3,
        help="largest difference relative to the output scale, max|ref - out| / max|ref|",
    )
    p.add_argument(
        "--min-agreement",
        type=float,
        default=0.99,
        help="smallest argmax agreement (float and int8 gates)",
    )
    p.add_argument("--batch-sizes", type=positive_int, nargs=2, default=[1, 16])
    p.add_argument(
        "--num-samples", type=positive_int, default=32, help="samples for the float parity check"
    )
    p.set_defaults(func=run_export)

    b = subparsers.add_parser(
        "bench",
        help="benchmark exported models on one data set",
        description="Latency, throughput, size, accuracy and agreement.",
    )
    b.add_argument("models", nargs="+", help=".onnx, .tflite or .keras files")
    b.add_argument("--data", required=True, help="dataset name (test split)")
    b.add_argument("--json", default=None, help="write results to this file")
    b.add_argument("--report", default=None, help="write report.md and a plot here")
    b.add_argument("--reference", default=None, help="agreement reference (a file name)")
    b.add_argument("--batch-size", type=positive_int, default=64)
    b.add_argument("--calls", type=positive_int, default=20)
    b.add_argument("--repeats", type=positive_int, default=5)
    b.add_argument("--threads", type=positive_int, default=None)
    b.add_argument("--max-samples", type=positive_int, default=None)
    b.add_argument(
        "--unsafe-deserialization",
        action="store_true",
        help="load trusted .keras files that hold code (Lambda layers)",
    )
    b.set_defaults(func=run_bench)


def _existing(path, what="model"):
    if not os.path.exists(path):
        raise ValueError(f"Expected an existing {what} file. Received: {what}={path!r}")
    return path


def run_export(args):
    """Handler of `kdkeras export`; returns the exit status."""
    from kdkeras import datasets
    from kdkeras import deploy

    path = _existing(args.model)
    if args.quantize and args.data is None:
        raise ValueError(
            "Expected --data NAME with --quantize: int8 is calibrated and "
            "checked on real data. Received: data=None"
        )
    train = test = None
    if args.data is not None:
        (x_train, _), (x_test, y_test) = datasets.load(args.data)
        train, test = x_train, (x_test, y_test)
    with warnings.catch_warnings():
        # Said once, below, as a `kdkeras: warning:` line.
        warnings.filterwarnings("ignore", message="int8 quantization quantized 0 of")
        summary = deploy.export_file(
            path,
            args.out,
            args.format,
            quantize=args.quantize,
            train=train,
            test=test,
            opset=args.opset,
            atol=args.atol,
            rtol=args.rtol,
            min_agreement=args.min_agreement,
            batch_sizes=tuple(args.batch_sizes),
            num_samples=args.num_samples,
            safe_mode=not args.unsafe_deserialization,
        )
    print(json.dumps(summary), flush=True)
    for artifact in summary["artifacts"]:
        q = artifact.get("quantization") or {}
        if q.get("quantized_ops") == 0:
            print(
                f"kdkeras: warning: {artifact['path']}: int8 quantization quantized 0 of "
                f"{q.get('quantizable_ops')} weight-bearing ops (the first and logits "
                "layers stay float32 by default); the file is "
                f"{q.get('size_ratio', float('nan')):.2f}x the float32 size",
                file=sys.stderr,
                flush=True,
            )
    if not summary["passed"]:
        print(f"kdkeras: error: {summary['error']}", file=sys.stderr)
        return 1
    return 0


def run_bench(args):
    """Handler of `kdkeras bench`; returns the exit status."""
    from kdkeras import datasets
    from kdkeras import deploy

    for path in args.models:
        _existing(path)
    (_, _), (x_test, y_test) = datasets.load(args.data)
    results = deploy.benchmark(
        args.models,
        x_test,
        y_test,
        reference=args.reference,
        batch_size=args.batch_size,
        calls=args.calls,
        repeats=args.repeats,
        threads=args.threads,
        max_eval_samples=args.max_samples,
        safe_mode=not args.unsafe_deserialization,
    )
    print(deploy.format_results(results))
    command = " ".join(
        ["kdkeras bench", *args.models, "--data", args.data]
        + [f"--batch-size {args.batch_size}", f"--repeats {args.repeats}"]
        + ([f"--threads {args.threads}"] if args.threads else [])
    )
    if args.json:
        deploy.write_json(results, args.json, extra={"data": args.data})
        print(f"wrote {args.json}")
    if args.report:
        written = deploy.write_report(
            results, args.report, title=f"Benchmark on {args.data}", command=command
        )
        print(f"wrote {written['report']}")
    return 0
