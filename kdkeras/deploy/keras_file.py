"""The `.keras` format: the model as Keras saves it, checked free of kdkeras objects."""

import re

from kdkeras.utils.atomic import atomic_path

__all__ = ["write_keras"]


def write_keras(model, path):
    import zipfile

    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp) as z:
            config = z.read("config.json").decode("utf-8")
        if re.search(r'"module":\s*"kdkeras', config):
            raise ValueError(
                "Expected a model without kdkeras objects. "
                f"Received: a config that references kdkeras, path={path!r}"
            )
    return {"route": "keras.Model.save", "fixes": []}
