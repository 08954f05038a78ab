"""Quantize an exported student to int8 and compare it with float32.

Shows the quantization half of deployment: `kdkeras.deploy.quantize`
(static QDQ per-channel int8 for CNNs, calibrated on training samples;
dynamic MatMul/Gemm int8 for Transformers), gated on argmax agreement with
the Keras model on held-out data, then `kdkeras.deploy.benchmark` on the
float32 and int8 files.

Command:

    .venv/bin/python export/int8.py student.keras --data mnist-5k --out out

Expected result for the demo student (benchmarks/deploy.py): about 0.27x
the float32 size, >= 99% agreement. `--smoke` trains a tiny model first.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", help="the .keras file")
    parser.add_argument("--data", default="mnist-5k")
    parser.add_argument("--out", default="export_output")
    parser.add_argument(
        "--mode",
        choices=["static", "dynamic"],
        default=None,
        help="default: static for CNNs, dynamic otherwise",
    )
    parser.add_argument("--min-agreement", type=float, default=0.99)
    parser.add_argument("--smoke", action="store_true", help="tiny model, seconds")
    args = parser.parse_args(argv)

    import keras

    from kdkeras import datasets
    from kdkeras import deploy
    from kdkeras import models

    os.makedirs(args.out, exist_ok=True)
    if args.smoke:
        args.model, args.data, args.min_agreement = (
            models.smoke_model(os.path.join(args.out, "smoke.keras")),
            "digits",
            0.9,
        )
    if not args.model:
        parser.error("a .keras model is required (or --smoke)")
    model = keras.models.load_model(args.model, compile=False)
    (x_train, _), (x_test, y_test) = datasets.load(args.data)
    stem = os.path.join(args.out, os.path.splitext(os.path.basename(args.model))[0])
    try:
        deploy.export(model, stem + ".onnx", sample_inputs=x_test)
        manifest = deploy.quantize(
            model,
            stem + ".onnx",
            stem + ".int8.onnx",
            mode=args.mode,
            calibration_data=x_train,
            eval_data=(x_test, y_test),
            min_agreement=args.min_agreement,
        )
    except deploy.ParityError as e:
        print(f"error: {e}", file=sys.stderr)
        print(json.dumps({"passed": False, **e.report}))
        return 1
    results = deploy.benchmark(
        [stem + ".onnx", stem + ".int8.onnx"],
        x_test,
        y_test,
        calls=5 if args.smoke else 20,
        repeats=2 if args.smoke else 5,
    )
    print(deploy.format_results(results))
    q = manifest["quantization"]
    print(
        json.dumps(
            {
                "passed": True,
                "agreement": manifest["parity"]["agreement"],
                "size_ratio": q["size_ratio"],
                "accuracy_change": q.get("accuracy_change"),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
