"""The errors of the deployment stage."""

import re

__all__ = ["ConversionError", "ParityError", "layers_named_in"]


class ParityError(RuntimeError):
    """An exported artifact does not match its Keras model.

    Attributes:
        report: the parity figures (a `dict`), also written to the manifest.
    """

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = {"passed": False, **(report or {})}


class ConversionError(RuntimeError):
    """A model could not be converted to the requested format.

    Raised when a converter leaves operations it does not know in the
    artifact (it would fail at load time in its runtime). The message names
    the operations and suggests the formats that do work.

    Attributes:
        ops: the operation types the converter could not handle.
        nodes: the graph nodes concerned.
        layers: the model's layers they come from, when known.
        alternatives: the formats that carry the model instead.
    """

    def __init__(self, message, *, ops=(), nodes=(), layers=(), alternatives=()):
        super().__init__(message)
        self.ops = list(ops)
        self.nodes = list(nodes)
        self.layers = list(layers)
        self.alternatives = list(alternatives)


def layers_named_in(model, node_names):
    """The model's layers named in TensorFlow node names, innermost scope first.

    Keras's TensorFlow tracing scopes ops as `model_1/layer_1/Op`: a scope
    matches a layer named `layer`, with or without a `_N` suffix. Used to
    say which layer a converter could not handle.
    """
    from kdkeras.utils import keras_compat

    names = {layer.name for layer in keras_compat.flatten_layers(model)}
    found = []
    for node in node_names:
        for part in reversed(re.split(r"[/:@]", node)):
            base = re.sub(r"_\d+$", "", part)
            name = part if part in names else base if base in names else None
            if name is not None:
                if name not in found:
                    found.append(name)
                break
    return found
