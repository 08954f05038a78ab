"""Width: keep the most important units or filters, slicing every dependent weight.

The analysis gives every tensor a channel layout: the groups of channels its
last axis is made of. A Dense, Conv or Embedding layer starts a new group (its
units); element-wise layers (BatchNormalization, activations, Dropout,
pooling, DepthwiseConv2D) pass their input's layout through; an Add joins the
groups of its inputs into one, so they are scored and sliced together;
Concatenate lays groups side by side; Flatten tiles its input's layout once
per spatial position (flat index = position * channels + channel). Groups that
meet a model input, a model output or a layer that cannot be sliced keep all
their channels.
"""

import math

import numpy as np
from keras import tree

from kdkeras.transfer import _graph
from kdkeras.utils import keras_compat

__all__ = ["SCORINGS", "prune_width", "prune_width_report"]

_POOLING = {
    f"{kind}Pooling{d}D"
    for kind in ("Max", "Average", "GlobalMax", "GlobalAverage")
    for d in (1, 2, 3)
}
_SHAPING = {f"{kind}{d}D" for kind in ("UpSampling", "ZeroPadding", "Cropping") for d in (1, 2, 3)}
_ELEMENTWISE = {
    "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Dropout", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity",
    "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
    "BatchNormalization", "DepthwiseConv1D", "DepthwiseConv2D",
} | _POOLING | _SHAPING  # fmt: skip
_MERGE = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
_CONV = {"Conv1D", "Conv2D", "Conv3D"}
_CONV_T = {"Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"}
_SEPARABLE = {"SeparableConv1D", "SeparableConv2D"}
_PRODUCERS = {"Dense", "Embedding"} | _CONV | _CONV_T | _SEPARABLE
# Activations that normalise over the channel axis: removing a channel
# changes every other one, so their channels are never removed.
_COUPLING = {"softmax", "log_softmax"}

# Per weight name: (axis, role) pairs; role "in" slices by the kept input
# channels, "out" by the kept units, "in_mult" by the input channels
# expanded by the depth multiplier (SeparableConv pointwise rows).
_RULES = {
    "Dense": {"kernel": ((0, "in"), (-1, "out")), "bias": ((0, "out"),)},
    "Embedding": {"embeddings": ((-1, "out"),)},
    "BatchNormalization": {
        name: ((0, "in"),) for name in ("gamma", "beta", "moving_mean", "moving_variance")
    },
    "DepthwiseConv1D": {"kernel": ((-2, "in"),), "bias": ((0, "in"),)},
    "DepthwiseConv2D": {"kernel": ((-2, "in"),), "bias": ((0, "in"),)},
    "PReLU": {"alpha": ((-1, "in"),)},
}
for _name in _CONV:
    _RULES[_name] = {"kernel": ((-2, "in"), (-1, "out")), "bias": ((0, "out"),)}
for _name in _CONV_T:
    _RULES[_name] = {"kernel": ((-1, "in"), (-2, "out")), "bias": ((0, "out"),)}
for _name in _SEPARABLE:
    _RULES[_name] = {
        "depthwise_kernel": ((-2, "in"),),
        "pointwise_kernel": ((-2, "in_mult"), (-1, "out")),
        "bias": ((0, "out"),),
    }
# The weight whose norm scores a producer's units: (weight name, unit axis).
_SCORED = {"Dense": ("kernel", -1), "Embedding": ("embeddings", -1)}
_SCORED.update({n: ("kernel", -1) for n in _CONV})
_SCORED.update({n: ("kernel", -2) for n in _CONV_T})
_SCORED.update({n: ("pointwise_kernel", -1) for n in _SEPARABLE})
_UNITS_KEY = {"Dense": "units", "Embedding": "output_dim"}
SCORINGS = ("l1", "l2", "activation")


def _describe(layer):
    return f"layer '{layer.name}' ({type(layer).__name__})"


def _kind(layer, node):
    """Classifies a layer call: (kind, reason it cannot be sliced or None)."""
    cls = type(layer).__name__
    config = layer.get_config()
    if config.get("data_format", "channels_last") != "channels_last":
        return "opaque", "works on channels_first data"
    if getattr(layer, "quantization_mode", None) or getattr(layer, "lora_enabled", False):
        return "opaque", "is quantized or has LoRA weights"
    if cls in _PRODUCERS:
        if config.get("groups", 1) != 1:
            return "opaque", "is a grouped convolution"
        if len(node.input_tensors) != 1:
            return "opaque", "takes several tensors"
        return "producer", None
    if cls in _ELEMENTWISE:
        if config.get("activation") in _COUPLING:
            return "opaque", "normalises over the channel axis"
        if config.get("depth_multiplier", 1) != 1:
            return "opaque", "has a depth multiplier other than 1"
        rank = len(node.outputs[0].shape)
        if cls == "BatchNormalization" and layer.axis not in (-1, rank - 1):
            return "opaque", "normalises an axis other than the last"
        if len(node.input_tensors) != 1:
            return "opaque", "takes several tensors"
        return "elementwise", None
    if cls in _MERGE:
        return "merge", None
    if cls == "Concatenate":
        rank = len(node.outputs[0].shape)
        return ("concat" if layer.axis % rank == rank - 1 else "merge"), None
    if cls == "Flatten":
        return "flatten", None
    return "opaque", "cannot be sliced by kdkeras.transfer"


class _Groups:
    """Union-find over channel groups, with what fixes them and who writes them."""

    def __init__(self):
        self.parent, self.size, self.fixed, self.producers = [], [], [], []

    def new(self, size, producer=None, fixed=None):
        self.parent.append(len(self.parent))
        self.size.append(size)
        if size is None and fixed is None:
            fixed = "its channel count is unknown"
        self.fixed.append(fixed)
        self.producers.append([producer] if producer is not None else [])
        return len(self.parent) - 1

    def find(self, g):
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def fix(self, g, reason):
        root = self.find(g)
        if self.fixed[root] is None:
            self.fixed[root] = reason

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            self.fixed[a] = self.fixed[a] or self.fixed[b]
            self.producers[a] += self.producers[b]


class _Analysis:
    """Channel layouts of every tensor of a model: `(tile, (group, ...))`."""

    def __init__(self, model):
        self.graph = _graph.functional_graph(model)
        self.groups = _Groups()
        self.layout = {}
        self.layer_in = {}  # id(layer) -> layout of its (first) input
        self.layer_out = {}  # id(layer) -> layout of its (first) output
        self.kinds = {}  # id(layer) -> (kind, reason)
        self.layers = {}  # name -> layer
        self.tensors = []  # every tensor with a layout, for activation scores
        self.consumers = {}  # id(tensor) -> layers that take it
        self.produced = {}  # id(layer) -> its (first) output tensor
        for x in self.graph.inputs:
            self._set(x, self._fresh(x, "it is a model input"))
        for node in _graph.topological_nodes(self.graph):
            self._visit(node)
        for x in self.graph.outputs:
            self._fix(self.layout[id(x)], "it is a model output")

    def _fresh(self, tensor, fixed=None, producer=None):
        return (1, (self.groups.new(_graph.last_dim(tensor), producer, fixed),))

    def _set(self, tensor, layout):
        self.layout[id(tensor)] = layout
        self.tensors.append(tensor)

    def _fix(self, layout, reason):
        for g in layout[1]:
            self.groups.fix(g, reason)

    def _sizes(self, layout):
        return [self.groups.size[self.groups.find(g)] for g in layout[1]]

    def _unify(self, a, b, reason):
        if a[0] == b[0] and self._sizes(a) == self._sizes(b):
            for ga, gb in zip(a[1], b[1]):
                self.groups.union(ga, gb)
            return True
        self._fix(a, reason)
        self._fix(b, reason)
        return False

    def _visit(self, node):
        layer = node.operation
        kind, why = self.kinds.setdefault(id(layer), _kind(layer, node))
        self.layers[layer.name] = layer
        for x in node.input_tensors:
            self.consumers.setdefault(id(x), []).append(layer)
        self.produced.setdefault(id(layer), node.outputs[0])
        ins = [self.layout[id(x)] for x in node.input_tensors]
        outs = node.outputs
        shared = id(layer) in self.layer_out
        if kind in ("producer", "elementwise") and shared:
            self._unify(
                self.layer_in[id(layer)],
                ins[0],
                f"{_describe(layer)} is shared between inputs of different layouts",
            )
        if kind == "producer":
            if not shared:
                coupling = layer.get_config().get("activation") in _COUPLING
                reason = f"{_describe(layer)} normalises over its units" if coupling else None
                self.layer_in[id(layer)] = ins[0]
                self.layer_out[id(layer)] = self._fresh(outs[0], reason, layer)
            self._set(outs[0], self.layer_out[id(layer)])
            return
        if kind == "elementwise":
            self.layer_in.setdefault(id(layer), ins[0])
            self.layer_out.setdefault(id(layer), ins[0])
            self._set(outs[0], self.layer_in[id(layer)])
            return
        if kind == "merge" and len({_graph.last_dim(x) for x in node.input_tensors}) == 1:
            reason = f"the inputs of {_describe(layer)} have different layouts"
            if all(self._unify(ins[0], other, reason) for other in ins[1:]):
                self._set(outs[0], ins[0])
                return
            kind, why = "opaque", "joins tensors of different layouts"
        if kind == "concat" and all(lay[0] == 1 for lay in ins):
            self._set(outs[0], (1, tuple(g for lay in ins for g in lay[1])))
            return
        if kind == "flatten":
            spatial = node.input_tensors[0].shape[1:-1]
            if all(d is not None for d in spatial):
                tile, pieces = ins[0]
                self._set(outs[0], (tile * math.prod(spatial), pieces))
                return
            why = "has unknown spatial dimensions"
        if why is None:
            why = "joins tensors it cannot slice"
        for lay in ins:
            self._fix(lay, f"it feeds {_describe(layer)}, which {why}")
        for x in outs:
            reason = f"its channels meet the output of {_describe(layer)}, which {why}"
            self._set(x, self._fresh(x, reason))

    # -- after the walk -----------------------------------------------------

    def producer_root(self, layer):
        return self.groups.find(self.layer_out[id(layer)][1][0])

    def roots(self):
        return sorted({self.groups.find(g) for g in range(len(self.groups.parent))})

    def index(self, layout, keep):
        """Kept indices along a tensor's last axis, or None when all are kept."""
        tile, pieces = layout
        roots = [self.groups.find(g) for g in pieces]
        if all(keep.get(r) is None for r in roots):
            return None
        sizes = [self.groups.size[r] for r in roots]
        total, parts, offset = sum(sizes), [], 0
        for r, size in zip(roots, sizes):
            kept = keep.get(r)
            parts.append(offset + (np.arange(size) if kept is None else kept))
            offset += size
        per_tile = np.concatenate(parts)
        return np.concatenate([s * total + per_tile for s in range(tile)])


def _bn_scale(analysis, layer):
    """Per-unit scale of the BatchNormalization that alone consumes `layer`.

    BatchNormalization undoes the scale of the filters before it, so their
    norm says nothing on its own; the norm of the folded filter,
    `|gamma| / sqrt(moving_variance + epsilon)` times the filter's, does.
    """
    consumers = analysis.consumers.get(id(analysis.produced[id(layer)]), [])
    if len(consumers) != 1 or type(consumers[0]).__name__ != "BatchNormalization":
        return 1.0
    bn = consumers[0]
    weights = {w.name: np.asarray(w.numpy(), dtype="float64") for w in bn.weights}
    gamma = np.abs(weights["gamma"]) if "gamma" in weights else 1.0
    return gamma / np.sqrt(weights["moving_variance"] + bn.epsilon)


def _weight_scores(analysis, root, norm):
    total = 0.0
    for layer in analysis.groups.producers[root]:
        cls = type(layer).__name__
        name, axis = _SCORED[cls]
        (w,) = [w for w in layer.weights if w.name == name]
        w = np.moveaxis(np.asarray(w.numpy(), dtype="float64"), axis, -1)
        w = w.reshape(-1, w.shape[-1])
        s = np.abs(w).sum(0) if norm == "l1" else np.sqrt((w**2).sum(0))
        s = s * _bn_scale(analysis, layer)
        # Producers joined by an Add may have very different scales; each
        # contributes relative to its own mean so that none dominates.
        total = total + s / (s.mean() + 1e-12)
    return total


def _activation_scores(analysis, roots, data, batch_size=64):
    import keras

    tensors = {}
    for x in analysis.tensors:
        tile, pieces = analysis.layout[id(x)]
        if tile == 1 and len(pieces) == 1:
            root = analysis.groups.find(pieces[0])
            if root in roots and len(x.shape) >= 2:
                tensors.setdefault(root, []).append(x)
    flat = [x for r in roots for x in tensors.get(r, [])]
    probe = keras.Model(keras_compat.inputs_struct(analysis.graph), flat)
    n = len(tree.flatten(data)[0])
    sums = [0.0] * len(flat)
    for start in range(0, n, batch_size):
        batch = tree.map_structure(lambda a: a[start : start + batch_size], data)  # noqa: B023
        outs = probe(batch, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for i, y in enumerate(outs):
            y = np.abs(keras.ops.convert_to_numpy(y).astype("float64"))
            sums[i] = sums[i] + y.reshape(-1, y.shape[-1]).sum(0)
    scores, i = {}, 0
    for r in roots:
        total = 0.0
        for _ in tensors.get(r, []):
            total = total + sums[i] / (sums[i].mean() + 1e-12)
            i += 1
        scores[r] = total
    return scores


def _is_share_or_count(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, float):
        return 0.0 < value <= 1.0
    return value >= 1


def _targets(analysis, width):
    """`{root: units to keep}` from the `width` argument."""
    g = analysis.groups
    targets, named = {}, {}
    if isinstance(width, dict):
        for name, value in width.items():
            if not _is_share_or_count(value):
                raise ValueError(
                    "Expected each value of `width` to be a share of units "
                    "to keep in (0, 1] or a count of units >= 1. "
                    f"Received: width={{{name!r}: {value!r}}}"
                )
            layer = analysis.layers.get(name)
            if layer is None:
                raise ValueError(
                    f"Expected the keys of `width` to name layers of the model. "
                    f"Received: width={{{name!r}: {value!r}}}; layers: "
                    f"{sorted(analysis.layers)}"
                )
            kind, why = analysis.kinds[id(layer)]
            if kind != "producer":
                raise ValueError(
                    "Expected the keys of `width` to name Dense, Conv or "
                    f"Embedding layers whose units can be removed; "
                    f"{_describe(layer)} "
                    + (f"{why}." if why else "has no units of its own.")
                    + f" Received: width={{{name!r}: {value!r}}}"
                )
            root = analysis.producer_root(layer)
            if g.fixed[root] is not None:
                raise ValueError(
                    f"Cannot remove units of {_describe(layer)}: "
                    f"{g.fixed[root]}. Received: width={{{name!r}: {value!r}}}"
                )
            size = g.size[root]
            if isinstance(value, int) and value > size:
                raise ValueError(
                    f"Expected at most {size} units for {_describe(layer)}. "
                    f"Received: width={{{name!r}: {value!r}}}"
                )
            k = value if isinstance(value, int) else max(1, round(value * size))
            if root in targets and targets[root] != k:
                raise ValueError(
                    f"Layers '{named[root]}' and '{name}' write the same channels "
                    "(joined by an Add or a shared layer) and must keep the same "
                    f"number. Received: width={width!r}"
                )
            targets[root], named[root] = k, name
        return targets
    if not (isinstance(width, float) and 0.0 < width <= 1.0):
        raise ValueError(
            "Expected `width` to be a share of units to keep in (0, 1] or a "
            f"dict of layer name -> share or count. Received: width={width!r}"
        )
    for root in analysis.roots():
        if g.fixed[root] is None and g.producers[root]:
            targets[root] = max(1, round(width * g.size[root]))
    return targets


def _slice(layer, weights, in_idx, out_idx):
    rules = _RULES.get(type(layer).__name__, {})
    mult = layer.get_config().get("depth_multiplier", 1)
    sliced = []
    for w, value in zip(layer.weights, weights):
        for axis, role in rules.get(w.name, ()):
            idx = out_idx if role == "out" else in_idx
            if idx is None or value.shape[axis] == 1:
                continue
            if role == "in_mult":
                idx = (idx[:, None] * mult + np.arange(mult)).ravel()
            value = np.take(value, idx, axis=axis)
        sliced.append(value)
    return sliced


def prune_width_report(model, width, scoring="l1", data=None):
    """`prune_width` returning `(student, report lines)`."""
    if scoring not in SCORINGS:
        raise ValueError(
            f"Expected `scoring` to be one of {SCORINGS}. Received: scoring={scoring!r}"
        )
    if scoring == "activation" and data is None:
        raise ValueError(
            "Expected sample inputs in `data` for scoring='activation'. Received: data=None"
        )
    analysis = _Analysis(model)
    targets = _targets(analysis, width)
    g = analysis.groups
    todo = [r for r, k in targets.items() if k < g.size[r]]
    if scoring == "activation":
        scores = _activation_scores(analysis, todo, data)
    else:
        scores = {r: _weight_scores(analysis, r, scoring) for r in todo}
    keep = {}
    for r in todo:
        order = np.argsort(-scores[r], kind="stable")
        keep[r] = np.sort(order[: targets[r]])

    rebuild = _graph.Rebuild(model)
    report = []

    def replace(layer):
        kind, _ = analysis.kinds[id(layer)]
        if kind not in ("producer", "elementwise"):
            return None
        in_idx = analysis.index(analysis.layer_in[id(layer)], keep)
        out_idx = analysis.index(analysis.layer_out[id(layer)], keep)
        updates = {}
        cls = type(layer).__name__
        if kind == "producer" and out_idx is not None:
            key = _UNITS_KEY.get(cls, "filters")
            updates[key] = len(out_idx)
            report.append(
                f"  {layer.name} ({cls}): {key} {layer.get_config()[key]} -> {len(out_idx)}"
            )
        new = _graph.clone_layer(layer, **updates)
        rebuild.defer(new, _slice(layer, layer.get_weights(), in_idx, out_idx))
        return new

    student = rebuild.run(_graph.copy_make(rebuild, replace))
    lines = [f"width: kept units by {scoring} score"]
    lines += sorted(report) or ["  nothing removed"]
    if not isinstance(width, dict):
        whole = sorted(
            f"  {p.name}: kept whole, {g.fixed[r]}"
            for r in analysis.roots()
            if g.fixed[r] is not None
            for p in g.producers[r]
        )
        lines += whole
    return student, lines


def prune_width(model, width, *, scoring="l1", data=None, verbose=False):
    """Keeps the most important units and filters of a model's layers.

    Removes units of Dense layers, filters of Conv / SeparableConv /
    ConvTranspose layers and dimensions of Embeddings, and slices every
    weight that depends on them: the next layer's input rows,
    BatchNormalization statistics, DepthwiseConv2D and PReLU channels, the
    rows of a Dense after Flatten (flat index = position * channels +
    channel). Channels joined by an Add (residual connections) are scored and
    removed together; Concatenate keeps the offsets of its inputs. Channels
    that reach a model output, come from a model input or meet a layer it
    cannot slice (Reshape, MultiHeadAttention, LayerNormalization, custom
    layers...) are kept whole, so those layers work unchanged.

    Args:
        model: a built Functional or Sequential `keras.Model`.
        width: share of units to keep in every layer that can lose units
            (float in (0, 1]), or a dict of layer name -> share (float) or
            count (int) of units to keep, for those layers only.
        scoring: how units are ranked: `"l1"` or `"l2"` norm of each unit's
            weights (folded with the BatchNormalization that follows, if
            any; summed over the layers that write a joined group, each
            relative to its own mean), or `"activation"`: mean absolute
            activation over `data` (over every tensor the group reaches).
            Defaults to `"l1"`.
        data: sample inputs for `scoring="activation"`, structured like the
            model's inputs. Defaults to None.
        verbose: print what was kept. Defaults to False.

    Returns:
        A new Functional `keras.Model` of the same layer classes, whose kept
        weights equal the model's.

    Raises:
        ValueError: if `width` names a layer whose units cannot be removed
            (the message names the layer that prevents it), or an argument
            is out of range.

    Example:

    ```python
    student = kdkeras.transfer.prune_width(teacher, 0.5)
    student = kdkeras.transfer.prune_width(teacher, {"conv_1": 8})
    ```

    Reference:
        Li et al., 2017, "Pruning Filters for Efficient ConvNets"
        (https://arxiv.org/abs/1608.08710).
    """
    student, lines = prune_width_report(model, width, scoring=scoring, data=data)
    if verbose:
        print("\n".join(lines))
    return student
