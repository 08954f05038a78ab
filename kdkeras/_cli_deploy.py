"""The `kdkeras export` and `kdkeras bench` subcommands.

`kdkeras export MODEL.keras --format onnx --out DIR [--quantize static]
[--data NAME]` prints one JSON line with the parity figures and exits with
status 1 when the parity gate fails. `kdkeras bench A.onnx B.onnx ...
--data NAME [--json OUT] [--report DIR]` prints a table. Bad input (a
missing file, a file that is no model, data that does not fit the model)
raises `ValueError`, which `kdkeras.cli` prints as one line.
"""

import argparse
import json
import os
import sys

_EXT = {"onnx": ".onnx", "tflite": ".tflite", "keras": ".keras", "saved_model": ""}


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
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument(
        "--min-agreement",
        type=float,
        default=0.99,
        help="smallest argmax agreement (float and int8 gates)",
    )
    p.add_argument("--batch-sizes", type=_positive_int, nargs=2, default=[1, 16])
    p.add_argument("--num-samples", type=_positive_int, default=32,
                   help="samples for the float parity check")
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
    b.add_argument("--batch-size", type=_positive_int, default=64)
    b.add_argument("--calls", type=_positive_int, default=20)
    b.add_argument("--repeats", type=_positive_int, default=5)
    b.add_argument("--threads", type=_positive_int, default=None)
    b.add_argument("--max-samples", type=_positive_int, default=None)
    b.add_argument(
        "--unsafe-deserialization",
        action="store_true",
        help="load trusted .keras files that hold code (Lambda layers)",
    )
    b.set_defaults(func=run_bench)


def _positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 1. Received: {text!r}"
        )
    return value


def _existing(path, what="model"):
    if not os.path.exists(path):
        raise ValueError(
            f"Expected an existing {what} file. Received: {what}={path!r}"
        )
    return path


def _load_data(name):
    from kdkeras import datasets

    return datasets.load(name)


def run_export(args):
    """Handler of `kdkeras export`; returns the exit status."""
    from kdkeras import _runtime
    from kdkeras import export as ex
    from kdkeras import quantize as qz

    path = _existing(args.model)
    if not path.endswith(".keras"):
        raise ValueError(
            f"Expected a Keras model file ending in .keras. Received: model={path!r}"
        )
    if args.quantize and args.data is None:
        raise ValueError(
            "Expected --data NAME with --quantize: int8 is calibrated and "
            "checked on real data. Received: data=None"
        )
    if args.quantize == "dynamic" and args.format != "onnx":
        raise ValueError(
            "Expected --format onnx for dynamic quantization. "
            f"Received: format={args.format!r}"
        )
    if args.quantize and args.format not in ("onnx", "tflite"):
        raise ValueError(
            "Expected --format onnx or tflite with --quantize. "
            f"Received: format={args.format!r}"
        )
    if args.format == "onnx":
        ex._validate_opset(args.opset)
    model = _runtime.load_keras(path, safe_mode=not args.unsafe_deserialization)
    train = test = None
    if args.data is not None:
        (x_train, y_train), (x_test, y_test) = _load_data(args.data)
        specs = ex.input_specs(model)
        ex.check_input_shapes(specs, [x_test])
        train, test = x_train, (x_test, y_test)
    stem = os.path.splitext(os.path.basename(path))[0]
    os.makedirs(args.out, exist_ok=True)
    target = os.path.join(args.out, stem + _EXT[args.format])
    if args.format == "saved_model":
        target = os.path.join(args.out, stem + "_saved_model")

    summary = {"model": path, "passed": True, "artifacts": []}

    def record(manifest):
        p = manifest["parity"]
        entry = {
            "path": manifest["path"],
            "format": manifest["format"],
            "passed": p.get("passed"),
            "gate": p.get("gate"),
            "max_abs_diff": p.get("max_abs_diff"),
            "agreement": p.get("agreement"),
            "atol": p.get("atol"),
            "min_agreement": p.get("min_agreement"),
            "num_samples": p.get("num_samples"),
            "data": p.get("data"),
            "batch_sizes": p.get("batch_sizes"),
            "file_size_bytes": manifest.get("file_size_bytes"),
            "manifest": manifest.get("manifest_path"),
        }
        q = manifest.get("quantization")
        if q:
            entry["quantization"] = {
                k: q[k]
                for k in (
                    "mode",
                    "size_ratio",
                    "accuracy_float32",
                    "accuracy_int8",
                    "accuracy_change",
                    "latency_ratio_batch1",
                    "agreement_with_float32",
                )
                if k in q
            }
        summary["artifacts"].append(entry)

    def emit():
        print(json.dumps(summary), flush=True)

    try:
        record(
            ex.export(
                model,
                target,
                args.format,
                sample_inputs=None if test is None else test[0],
                opset=args.opset,
                atol=args.atol,
                min_agreement=args.min_agreement,
                batch_sizes=tuple(args.batch_sizes),
                num_samples=args.num_samples,
                safe_mode=not args.unsafe_deserialization,
            )
        )
        if args.quantize:
            qpath = os.path.join(args.out, stem + ".int8" + _EXT[args.format])
            if args.format == "onnx":
                manifest = qz.quantize(
                    model,
                    target,
                    qpath,
                    mode=args.quantize,
                    calibration_data=train,
                    eval_data=test,
                    min_agreement=args.min_agreement,
                    batch_sizes=tuple(args.batch_sizes),
                )
            else:
                manifest = qz.quantize_tflite(
                    model,
                    qpath,
                    calibration_data=train,
                    eval_data=test,
                    min_agreement=args.min_agreement,
                    batch_sizes=tuple(args.batch_sizes),
                )
            record(manifest)
    except ex.ParityError as e:
        summary["passed"] = False
        summary["error"] = " ".join(str(e).split())
        summary["failed_parity"] = e.report
        emit()
        print(f"kdkeras: error: {summary['error']}", file=sys.stderr)
        return 1
    emit()
    return 0


def run_bench(args):
    """Handler of `kdkeras bench`; returns the exit status."""
    from kdkeras import bench
    from kdkeras import report

    for path in args.models:
        _existing(path)
    (_, _), (x_test, y_test) = _load_data(args.data)
    results = bench.benchmark(
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
    print(bench.format_table(results))
    command = " ".join(
        ["kdkeras bench", *args.models, "--data", args.data]
        + [f"--batch-size {args.batch_size}", f"--repeats {args.repeats}"]
        + ([f"--threads {args.threads}"] if args.threads else [])
    )
    if args.json:
        bench.write_json(results, args.json, extra={"data": args.data})
        print(f"wrote {args.json}")
    if args.report:
        written = report.write_report(
            results, args.report, title=f"Benchmark on {args.data}", command=command
        )
        print(f"wrote {written['report']}")
    return 0
