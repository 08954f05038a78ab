"""The LiteRT (`.tflite`) format, float32 or int8 calibrated."""

import re

from kdkeras.deploy import runners
from kdkeras.deploy import signatures
from kdkeras.deploy.errors import ConversionError
from kdkeras.deploy.errors import layers_named_in
from kdkeras.utils.atomic import atomic_path

__all__ = ["write_litert"]


def write_litert(model, path, specs, calibration=None):
    import tensorflow as tf

    kwargs = {}
    if calibration is not None:
        cal = runners.as_input_list(calibration)

        def representative():
            for i in range(len(cal[0])):
                yield [x[i : i + 1] for x in cal]

        kwargs = {
            "optimizations": [tf.lite.Optimize.DEFAULT],
            "representative_dataset": representative,
        }
    arg = signatures.export_signature(model, specs)
    with atomic_path(path, suffix=".tflite") as tmp:
        try:
            model.export(tmp, format="litert", verbose=False, input_signature=arg, **kwargs)
        except Exception as e:
            # The converter's own error is an MLIR trace; say which op and
            # layer it refused, and what works instead.
            if type(e).__name__ != "ConverterError":
                raise
            message = str(e)
            ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op", message)))
            nodes = re.findall(r'fused\["[^"]*", "([^"@]+)', message)
            layers = layers_named_in(model, nodes)
            raise ConversionError(
                "Expected a model the LiteRT converter can convert with its built-in "
                f"ops{f' (TensorFlow ops {ops} are neither built-in nor flex ops)' if ops else ''}. "
                "Export with format='saved_model' or 'keras' instead (the TensorFlow "
                f"runtime runs every TensorFlow op). Received: layers={layers}, "
                f"converter error: {' '.join(message.split())[:300]}",
                ops=ops,
                nodes=nodes,
                layers=layers,
                alternatives=["saved_model", "keras"],
            ) from e
    return {
        "route": "keras.Model.export(format='litert')",
        "fixes": [],
        "quantization": "int8 (LiteRT, calibrated)" if kwargs else None,
    }
