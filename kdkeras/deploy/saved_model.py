"""The TensorFlow SavedModel format (a folder), through `keras.Model.export`."""

from kdkeras.deploy import signatures
from kdkeras.utils.atomic import atomic_path

__all__ = ["write_saved_model"]


def write_saved_model(model, path, specs):
    arg = signatures.export_signature(model, specs)
    with atomic_path(path, is_dir=True) as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False, input_signature=arg)
    return {"route": "keras.Model.export", "fixes": []}
