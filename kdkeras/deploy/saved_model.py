"""The TensorFlow SavedModel format (a folder), through `keras.Model.export`."""

from kdkeras.utils.atomic import atomic_path

__all__ = ["write_saved_model"]


def write_saved_model(model, path, specs):
    arg = [specs[0]] if len(specs) == 1 else [list(specs)]
    with atomic_path(path, is_dir=True) as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False, input_signature=arg)
    return {"route": "keras.Model.export", "fixes": []}
