"""Walking and rebuilding the layer graph of a Functional or Sequential model.

Every transfer operation is a rebuild: the teacher's nodes are replayed in
topological order on fresh `keras.Input`s, each teacher layer replaced by a new
layer made from its (possibly rewritten) config, and the new layers' weights
are set from the teacher's (possibly sliced or factorised) weights once the new
graph is built. The result is a plain Functional model made of the same layer
classes as the teacher, with no kdkeras object inside.
"""

import keras
from keras import tree

from kdkeras.utils import keras_compat


def functional_graph(model, arg="model"):
    """Returns the Functional graph to walk for `model`.

    Sequential models are walked through the Functional graph they build
    when they know their input shape.
    """
    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
        if graph is None:
            raise ValueError(
                f"Expected `{arg}` to be a built Sequential model (give it a "
                f"`keras.Input` or call it once). Received: {arg}={model!r} "
                "with no input shape"
            )
        return graph
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        raise TypeError(
            f"Expected `{arg}` to be a Functional or Sequential keras.Model; "
            "subclassed models have no layer graph to transfer from. "
            f"Received: {arg}={model!r}"
        )
    return model


def topological_nodes(graph):
    """Returns the graph's layer-call nodes, each after the nodes it uses."""
    nodes = []
    by_depth = keras_compat.nodes_by_depth(graph)
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            if node.operation is not None and not node.is_input:
                nodes.append(node)
    return nodes


def producer_of(tensor):
    """Returns the layer that produced a symbolic tensor."""
    return keras_compat.keras_history(tensor).operation


def last_dim(tensor):
    shape = tensor.shape
    if len(shape) < 2 or shape[-1] is None:
        return None
    return int(shape[-1])


def clone_layer(layer, **config_updates):
    """A new, unbuilt layer of the same class from `layer`'s rewritten config."""
    config = layer.get_config()
    config.update(config_updates)
    return layer.__class__.from_config(config)


class Rebuild:
    """Replays a model's graph with new layers.

    `make(node)` returns the callable that computes the node's outputs in the
    new graph; it is asked once per node, and should cache per layer so that
    a layer shared by several nodes stays shared. `defer(layer, weights)`
    records weights to set once every new layer is built.

    Args:
        model: Functional or Sequential `keras.Model`.
        skip: ids of nodes not to replay (removed blocks).
        aliases: `{id(tensor): tensor}`; a tensor of the teacher that stands
            for another one (the output of a removed block stands for its
            input).
    """

    def __init__(self, model, skip=(), aliases=None):
        self.model = model
        self.graph = functional_graph(model)
        self.skip = set(skip)
        self.aliases = dict(aliases or {})
        self._pending = []

    def defer(self, layer, weights):
        self._pending.append((layer, weights))

    def _resolve(self, tensor):
        seen = set()
        while id(tensor) in self.aliases:
            if id(tensor) in seen:  # pragma: no cover - guarded by callers
                raise ValueError("Cyclic tensor aliases.")
            seen.add(id(tensor))
            tensor = self.aliases[id(tensor)]
        return tensor

    def run(self, make):
        graph = self.graph
        new_inputs = []
        for x in graph.inputs:
            new_inputs.append(
                keras.Input(
                    batch_shape=x.shape,
                    dtype=x.dtype,
                    sparse=x.sparse,
                    ragged=getattr(x, "ragged", False),
                    name=producer_of(x).name,
                )
            )
        tensors = {id(x): y for x, y in zip(graph.inputs, new_inputs)}
        for node in topological_nodes(graph):
            if id(node) in self.skip:
                continue
            for x in node.input_tensors:
                source = self._resolve(x)
                if source is not x:
                    tensors[id(x)] = tensors[id(source)]
            args, kwargs = node.arguments.fill_in(tensors)
            outputs = make(node)(*args, **kwargs)
            for x, y in zip(node.outputs, tree.flatten(outputs)):
                tensors[id(x)] = y
        outputs = [tensors[id(self._resolve(x))] for x in graph.outputs]
        new_model = keras.Model(
            inputs=tree.pack_sequence_as(keras_compat.inputs_struct(graph), new_inputs),
            outputs=tree.pack_sequence_as(keras_compat.outputs_struct(graph), outputs),
            name=self.model.name,
        )
        for layer, weights in self._pending:
            layer.set_weights(weights)
        return new_model


def copy_make(rebuild, replace=None):
    """A `make` for `Rebuild.run` that clones each layer with its weights.

    `replace(layer)` may return a callable to use instead of a clone (it must
    defer its own weights), or None for a plain copy.
    """
    cache = {}

    def make(node):
        layer = node.operation
        if id(layer) not in cache:
            new = replace(layer) if replace is not None else None
            if new is None:
                new = clone_layer(layer)
                rebuild.defer(new, layer.get_weights())
            cache[id(layer)] = new
        return cache[id(layer)]

    return make
