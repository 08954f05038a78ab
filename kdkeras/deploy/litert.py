"""The LiteRT (`.tflite`) format, float32 or int8 calibrated."""

from kdkeras.deploy import runners
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
    arg = [specs[0]] if len(specs) == 1 else [list(specs)]
    with atomic_path(path, suffix=".tflite") as tmp:
        model.export(tmp, format="litert", verbose=False, input_signature=arg, **kwargs)
    return {
        "route": "keras.Model.export(format='litert')",
        "fixes": [],
        "quantization": "int8 (LiteRT, calibrated)" if kwargs else None,
    }
