"""Export matrix: the architectures people use, through every format and the parity gate.

Every `keras.applications` family (random weights, the smallest input each
accepts, 5 classes, logits out) and, when keras-hub is installed, a BERT-
style encoder, a GPT-2-style decoder and a ViT built from tiny configs
(never from presets: nothing is downloaded). Each model goes through
`kdkeras.deploy.export` to ONNX, LiteRT and SavedModel (parity gate on
random inputs at batch sizes 1 and 4), then to int8 (onnxruntime static QDQ
for CNNs, dynamic for Transformers; LiteRT int8 for CNNs). The table lists,
per model and format: pass/fail, max absolute and relative difference,
file size, batch-1 latency p50 in the format's runtime, and for int8 how
many weight-bearing ops were quantized and the argmax agreement with the
float32 model.

On random weights argmax agreement means little, so int8 is not gated on
it here (`min_agreement=0`): the figures are reported, not judged.

Command (the README table):

    python benchmarks/zoo_export.py --out zoo_output

writes `zoo_output/zoo.json` and `zoo_output/zoo.md` (atomically, after
every row) and prints the table. `--models MobileNetV2,BERT` picks rows;
`--smoke` runs one tiny model.
"""

import argparse
import os
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

NUM_CLASSES = 5
# The smallest input each family accepts with include_top=True and
# weights=None (Xception and InceptionV3 refuse anything smaller).
APPLICATIONS = {
    "MobileNetV2": 32,
    "MobileNetV3Small": 32,
    "MobileNetV3Large": 32,
    "EfficientNetB0": 32,
    "EfficientNetV2B0": 32,
    "ResNet50": 32,
    "ResNet50V2": 32,
    "DenseNet121": 32,
    "ConvNeXtTiny": 32,
    "Xception": 71,
    "InceptionV3": 75,
    "NASNetMobile": 32,
    "VGG16": 32,
}
# RegNetX002 (asked for by issue 10) was in tf.keras 2.x; Keras 3.15's
# keras.applications has no RegNet family, so there is no row for it.
HUB = ("BERT", "GPT2", "ViT")
SEQUENCE_LENGTH = 16
VOCABULARY = 100
FORMATS = ("onnx", "tflite", "saved_model")
EXTENSIONS = {"onnx": ".onnx", "tflite": ".tflite", "saved_model": "_saved_model"}


def hub_available():
    try:
        import keras_hub  # noqa: F401
    except ImportError:
        return False
    return True


def build(name, seed=0):
    """The model called `name` (a `keras.applications` family or a keras-hub row)."""
    import keras

    keras.utils.set_random_seed(seed)
    if name in APPLICATIONS:
        size = APPLICATIONS[name]
        kwargs = {"weights": None, "input_shape": (size, size, 3), "classes": NUM_CLASSES}
        # Logits: a softmax of random weights is often uniform or one-hot,
        # which hides any difference.
        kwargs["classifier_activation"] = None
        return getattr(keras.applications, name)(**kwargs)
    if name == "tiny_cnn":
        return keras.Sequential(
            [
                keras.Input((16, 16, 3)),
                keras.layers.Conv2D(8, 3, activation="relu"),
                keras.layers.Conv2D(8, 3, groups=2, activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(NUM_CLASSES),
            ],
            name="tiny_cnn",
        )
    import keras_hub

    tiny = {"num_layers": 2, "num_heads": 2, "hidden_dim": 16}
    if name == "BERT":
        return keras_hub.models.BertBackbone(
            vocabulary_size=VOCABULARY,
            intermediate_dim=32,
            max_sequence_length=SEQUENCE_LENGTH,
            **tiny,
        )
    if name == "GPT2":
        return keras_hub.models.GPT2Backbone(
            vocabulary_size=VOCABULARY,
            intermediate_dim=32,
            max_sequence_length=SEQUENCE_LENGTH,
            **tiny,
        )
    if name == "ViT":
        return keras_hub.models.ViTBackbone(
            image_shape=(32, 32, 3), patch_size=8, mlp_dim=32, **tiny
        )
    raise ValueError(
        f"Expected a model name in {list(APPLICATIONS) + list(HUB) + ['tiny_cnn']}. "
        f"Received: name={name!r}"
    )


def sample_inputs(model, n, seed=0):
    """Random inputs for the model: images in [0, 255], token ids, all-ones masks."""
    rng = np.random.default_rng(seed)
    arrays = []
    for tensor in model.inputs:
        shape = (n,) + tuple(d or SEQUENCE_LENGTH for d in tensor.shape[1:])
        name = tensor.name or ""
        if "mask" in name:
            arrays.append(np.ones(shape, dtype=tensor.dtype))
        elif "segment" in name:
            arrays.append(np.zeros(shape, dtype=tensor.dtype))
        elif "int" in str(tensor.dtype):
            arrays.append(rng.integers(0, VOCABULARY, shape).astype(tensor.dtype))
        else:
            # keras.applications models rescale [0, 255] images themselves.
            arrays.append((255 * rng.random(shape)).astype("float32"))
    return arrays


def is_image_model(model):
    return len(model.inputs) == 1 and len(model.inputs[0].shape) == 4


def _latency_ms(path, x, threads):
    from kdkeras import deploy
    from kdkeras.deploy import runners

    runner = deploy.load_runner(path, threads=threads)
    batch = [a[:1] for a in x]
    (times,) = runners.interleaved_timings([runner], batch, calls=10, repeats=3, warmup=2)
    return 1e3 * float(np.median(times))


def _row(name, fmt, manifest=None, error=None, seconds=None):
    row = {"model": name, "format": fmt, "passed": False, "seconds": seconds}
    if manifest is not None:
        p = manifest.get("parity", {})
        q = manifest.get("quantization") or {}
        counts = q.get("quantized_ops")
        row.update(
            {
                "passed": bool(p.get("passed")),
                "route": manifest.get("route"),
                "max_abs_diff": p.get("max_abs_diff"),
                "max_rel_diff": p.get("max_rel_diff"),
                "output_scale": p.get("output_scale"),
                "agreement": p.get("agreement"),
                "size_bytes": manifest.get("file_size_bytes"),
                "quantized_ops": counts,
                "quantizable_ops": q.get("quantizable_ops"),
                "fixes": manifest.get("fixes"),
            }
        )
    if error is not None:
        report = getattr(error, "report", None) or {}
        row["error"] = f"{type(error).__name__}: {' '.join(str(error).split())[:400]}"
        for key in ("max_abs_diff", "max_rel_diff", "agreement"):
            if report.get(key) is not None:
                row[key] = report[key]
    return row


def export_model(name, out_dir, *, formats=FORMATS, int8=True, num_samples=8, threads=None):
    """Exports one model to each format (and int8); returns its table rows."""
    from kdkeras import deploy

    model = build(name)
    x = sample_inputs(model, num_samples)
    rows = []
    paths = {}
    for fmt in formats:
        path = os.path.join(out_dir, name + EXTENSIONS[fmt])
        start = time.perf_counter()
        try:
            manifest = deploy.export(
                model, path, fmt, sample_inputs=x, batch_sizes=(1, 4), threads=threads
            )
            row = _row(name, fmt, manifest, seconds=time.perf_counter() - start)
            row["latency_ms"] = _latency_ms(path, x, threads)
            paths[fmt] = path
        except (deploy.ParityError, deploy.ConversionError, ValueError) as e:
            row = _row(name, fmt, error=e, seconds=time.perf_counter() - start)
        rows.append(row)
        print(_line(row), flush=True)
    if not int8:
        return rows
    cal = sample_inputs(model, num_samples, seed=1)
    jobs = []
    if "onnx" in paths:
        jobs.append(("onnx int8", ".int8.onnx"))
    if "tflite" in formats and is_image_model(model):
        jobs.append(("tflite int8", ".int8.tflite"))
    for fmt, ext in jobs:
        path = os.path.join(out_dir, name + ext)
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                files = (paths["onnx"], path) if fmt == "onnx int8" else (path,)
                quantize = deploy.quantize if fmt == "onnx int8" else deploy.quantize_tflite
                manifest = quantize(
                    model,
                    *files,
                    calibration_data=cal,
                    eval_data=x,
                    min_agreement=0.0,
                    batch_sizes=(1, 4),
                    threads=threads,
                )
            row = _row(name, fmt, manifest, seconds=time.perf_counter() - start)
            row["latency_ms"] = _latency_ms(path, x, threads)
        except (deploy.ParityError, deploy.ConversionError, ValueError) as e:
            row = _row(name, fmt, error=e, seconds=time.perf_counter() - start)
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def _line(row):
    return (
        f"{row['model']:<18} {row['format']:<12} {'pass' if row['passed'] else 'FAIL':<5}"
        f" abs={_fmt(row.get('max_abs_diff'), '.2g')} rel={_fmt(row.get('max_rel_diff'), '.2g')}"
        f" {row.get('error', '')[:200]}"
    )


def markdown(rows):
    """The table as Markdown."""
    lines = [
        "| model | format | gate | max abs diff | max rel diff | size MB | p50 ms | int8 ops | agreement |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        size = r.get("size_bytes")
        ops = (
            f"{r['quantized_ops']}/{r['quantizable_ops']}"
            if r.get("quantizable_ops") is not None
            else "-"
        )
        gate = "pass" if r["passed"] else f"fail: {r.get('error', '')[:120]}"
        lines.append(
            f"| {r['model']} | {r['format']} | {gate} | {_fmt(r.get('max_abs_diff'), '.1e')} | "
            f"{_fmt(r.get('max_rel_diff'), '.1e')} | "
            f"{_fmt(None if size is None else size / 2**20, '.2f')} | "
            f"{_fmt(r.get('latency_ms'), '.2f')} | {ops} | "
            f"{_fmt(r.get('agreement') if 'int8' in r['format'] else None, '.2f')} |"
        )
    return "\n".join(lines)


def _cell(r):
    if r is None:
        return "-"
    if not r["passed"]:
        return "FAIL: " + r.get("error", "")[:80]
    size = r.get("size_bytes")
    parts = [
        f"abs {_fmt(r.get('max_abs_diff'), '.0e')}",
        f"rel {_fmt(r.get('max_rel_diff'), '.0e')}",
    ]
    if "int8" in r["format"]:
        parts = [f"{r.get('quantized_ops')}/{r.get('quantizable_ops')} ops"]
        parts.append(f"agr {_fmt(r.get('agreement'), '.2f')}")
    parts.append(f"{_fmt(None if size is None else size / 2**20, '.1f')} MB")
    parts.append(f"{_fmt(r.get('latency_ms'), '.1f')} ms")
    return ("pass, " if "int8" not in r["format"] else "") + ", ".join(parts)


def wide_markdown(rows):
    """One row per model, one column per format (the README table)."""
    formats = ("onnx", "tflite", "saved_model", "onnx int8", "tflite int8")
    by = {(r["model"], r["format"]): r for r in rows}
    models = list(dict.fromkeys(r["model"] for r in rows))
    lines = [
        "| model | ONNX | LiteRT | SavedModel | ONNX int8 | LiteRT int8 |",
        "|---|---|---|---|---|---|",
    ]
    for m in models:
        lines.append(f"| {m} | " + " | ".join(_cell(by.get((m, f))) for f in formats) + " |")
    return "\n".join(lines)


def write(rows, out_dir, command, seconds, versions):
    import json

    from kdkeras.utils.atomic import atomic_write_text

    report = {"command": command, "seconds": seconds, "versions": versions, "rows": rows}
    atomic_write_text(
        os.path.join(out_dir, "zoo.json"), json.dumps(report, indent=2, default=str) + "\n"
    )
    text = (
        f"Command: `{command}` ({seconds / 60:.1f} min)\n\n"
        + markdown(rows)
        + "\n\n"
        + wide_markdown(rows)
        + "\n\nVersions: "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + "\n"
    )
    atomic_write_text(os.path.join(out_dir, "zoo.md"), text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="zoo_output")
    parser.add_argument("--models", default=None, help="comma-separated row names")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--smoke", action="store_true", help="one tiny CNN, all formats")
    parser.add_argument(
        "--table",
        nargs="+",
        default=None,
        metavar="ZOO_JSON",
        help="print the one-row-per-model table of earlier runs (later files win) and exit",
    )
    args = parser.parse_args(argv)
    if args.table:
        import json

        merged = {}
        for path in args.table:
            with open(path, encoding="utf-8") as f:
                for row in json.load(f)["rows"]:
                    merged[(row["model"], row["format"])] = row
        print(wide_markdown(list(merged.values())))
        return 0

    from kdkeras.deploy import manifest as manifest_lib

    if args.smoke:
        names = ["tiny_cnn"]
    elif args.models:
        names = args.models.split(",")
    else:
        names = list(APPLICATIONS) + (list(HUB) if hub_available() else [])
    if not args.smoke and not args.models and not hub_available():
        print("keras-hub is not installed: the BERT, GPT2 and ViT rows are skipped")
    os.makedirs(args.out, exist_ok=True)
    command = "python benchmarks/zoo_export.py " + " ".join(argv or sys.argv[1:])
    versions = manifest_lib.library_versions()
    if hub_available():
        import keras_hub

        versions["keras_hub"] = keras_hub.__version__
    rows, start = [], time.perf_counter()
    for name in names:
        rows += export_model(
            name,
            args.out,
            formats=tuple(args.formats.split(",")),
            int8=not args.no_int8,
            threads=args.threads,
        )
        write(rows, args.out, command.strip(), time.perf_counter() - start, versions)
    print(markdown(rows))
    print(f"{time.perf_counter() - start:.0f} s")
    float_rows = [r for r in rows if "int8" not in r["format"]]
    return 0 if all(r["passed"] for r in float_rows) else 1


if __name__ == "__main__":
    sys.exit(main())
