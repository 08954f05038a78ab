"""Export a trained Keras model to ONNX, gated on parity with the Keras model.

Shows the export half of deployment: `kdkeras.deploy.export` writes the ONNX
file, runs it in onnxruntime at batch sizes 1 and 16 on held-out data, and
fails (exit status 1) when the max absolute difference exceeds 1e-4 or the
argmax agreement falls below 99%. A manifest JSON lands beside the file.

Command:

    .venv/bin/python export/to_onnx.py student.keras --data mnist-5k --out out

Expected result: one JSON line with `"passed": true`, max_abs_diff around
1e-6 and agreement 1.0. `--smoke` trains a tiny model on `digits` first.
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
    parser.add_argument("--data", default="mnist-5k", help="dataset for parity")
    parser.add_argument("--out", default="export_output")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--smoke", action="store_true", help="tiny model, seconds")
    args = parser.parse_args(argv)

    import keras

    from kdkeras import datasets
    from kdkeras import deploy
    from kdkeras import models

    os.makedirs(args.out, exist_ok=True)
    if args.smoke:
        args.model, args.data = models.smoke_model(os.path.join(args.out, "smoke.keras")), "digits"
    if not args.model:
        parser.error("a .keras model is required (or --smoke)")
    model = keras.models.load_model(args.model, compile=False)
    _, (x_test, _) = datasets.load(args.data)
    name = os.path.splitext(os.path.basename(args.model))[0] + ".onnx"
    try:
        manifest = deploy.export(
            model,
            os.path.join(args.out, name),
            sample_inputs=x_test,
            opset=args.opset,
        )
        parity = manifest["parity"]
    except deploy.ParityError as e:
        parity = e.report
        print(f"error: {e}", file=sys.stderr)
    passed = bool(parity.get("passed", False))
    print(
        json.dumps(
            {
                "passed": passed,
                "max_abs_diff": parity.get("max_abs_diff"),
                "agreement": parity.get("agreement"),
            }
        )
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
