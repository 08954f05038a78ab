"""Depth: keep a subset of a model's repeated blocks, with their weights.

A block is a piece of the graph with one input tensor and one output tensor
of the same shape: a stack of identical layers, a residual block, a
Transformer encoder block. Removing a block connects its input straight to
whatever used its output, which for a residual block is its skip connection.
"""

import json
import math

import keras
from keras import tree

from kdkeras.transfer import _graph

__all__ = ["Block", "find_blocks", "keep_blocks", "keep_blocks_report"]


class Block:
    """One removable block of a model, as found by `find_blocks`.

    Attributes:
        name: the block's name: the common prefix of its layer names when it
            has one, else `"first_layer..last_layer"`.
        layers: names of the block's layers, in graph order.
        input_shape: shape of the block's input tensor.
        output_shape: shape of the block's output tensor.
        removable: whether the block keeps its input's shape and dtype, so
            that it can be removed.
    """

    def __init__(self, name, nodes, input, output):
        self.name = name
        self._nodes = nodes
        self._input = input
        self._output = output
        layers = []
        for node in nodes:
            if node.operation.name not in layers:
                layers.append(node.operation.name)
        self.layers = tuple(layers)
        self.input_shape = tuple(input.shape)
        self.output_shape = tuple(output.shape)

    @property
    def removable(self):
        return self.input_shape == self.output_shape and self._input.dtype == self._output.dtype

    def __repr__(self):
        return f"Block({self.name!r}, layers={list(self.layers)})"


def _cuts(graph, nodes):
    """Positions after which exactly one tensor is still needed, and that tensor."""
    last_use = {}
    for i, node in enumerate(nodes):
        for x in node.input_tensors:
            last_use[id(x)] = i
    for x in graph.outputs:
        last_use[id(x)] = math.inf
    live = {id(x): x for x in graph.inputs if id(x) in last_use}
    cuts = [(-1, graph.inputs[0])] if len(graph.inputs) == 1 else []
    for i, node in enumerate(nodes):
        for x in node.input_tensors:
            if last_use[id(x)] == i:
                live.pop(id(x), None)
        for x in node.outputs:
            if last_use.get(id(x), -1) > i:
                live[id(x)] = x
        if len(live) == 1:
            cuts.append((i, next(iter(live.values()))))
    return cuts


def _signature(nodes, input):
    """What makes two segments interchangeable: layer configs and wiring."""
    local = {id(input): "in"}
    for j, node in enumerate(nodes):
        for k, x in enumerate(node.outputs):
            local[id(x)] = f"{j}.{k}"
    parts = []
    for node in nodes:
        config = dict(node.operation.get_config())
        config.pop("name", None)
        kwargs = tree.map_structure(
            lambda v: "tensor" if isinstance(v, keras.KerasTensor) else v,
            node.arguments.kwargs,
        )
        parts.append(
            json.dumps(
                [
                    type(node.operation).__name__,
                    config,
                    [local.get(id(x), "outside") for x in node.input_tensors],
                    kwargs,
                ],
                sort_keys=True,
                default=repr,
            )
        )
    return tuple(parts)


def _priority(node):
    # Blocks are cut where a layer with a kernel starts them (conv-bn-relu,
    # not bn-relu-conv); failing that, where a layer with weights does.
    shapes = [w.shape for w in node.operation.weights]
    if any(len(s) >= 2 for s in shapes):
        return 0
    return 1 if shapes else 2


def _name_blocks(blocks_nodes):
    names = []
    for nodes in blocks_nodes:
        layer_names = [n.operation.name for n in nodes]
        prefix = layer_names[0]
        for name in layer_names[1:]:
            while not name.startswith(prefix):
                prefix = prefix[:-1]
        names.append(prefix.rstrip("_-/.") or None)
    if None in names or len(set(names)) != len(names):
        names = [f"{nodes[0].operation.name}..{nodes[-1].operation.name}" for nodes in blocks_nodes]
    return names


def _auto_blocks(graph, nodes):
    cuts = _cuts(graph, nodes)
    segments = []  # (nodes, input, output)
    for (a, x_in), (b, x_out) in zip(cuts, cuts[1:]):
        segments.append((nodes[a + 1 : b + 1], x_in, x_out))
    ids = {}
    sigs = [ids.setdefault(_signature(s[0], s[1]), len(ids)) for s in segments]
    count = len(sigs)
    candidates = []
    for i in range(count):
        for p in range(1, (count - i) // 2 + 1):
            reps = 1
            while sigs[i + reps * p : i + (reps + 1) * p] == sigs[i : i + p]:
                reps += 1
            if reps >= 2:
                priority = _priority(segments[i][0][0])
                candidates.append((priority, -p * reps, p, i, reps))
    taken, stacks = set(), []
    for _, _, p, i, reps in sorted(candidates):
        span = set(range(i, i + p * reps))
        if span & taken:
            continue
        taken |= span
        units = [segments[i + r * p : i + (r + 1) * p] for r in range(reps)]
        stacks.append((i, [(sum((s[0] for s in u), []), u[0][1], u[-1][2]) for u in units]))
    return [units for _, units in sorted(stacks, key=lambda s: s[0])]


def _prefix_blocks(graph, nodes, prefixes):
    if isinstance(prefixes, str) or not all(isinstance(p, str) for p in prefixes):
        raise TypeError(
            "Expected `blocks` to be a list of layer-name prefixes, one per "
            f"block. Received: blocks={prefixes!r}"
        )
    outputs = {id(x) for x in graph.outputs}
    owner, units = {}, []
    for prefix in prefixes:
        block_nodes = [n for n in nodes if n.operation.name.startswith(prefix)]
        if not block_nodes:
            raise ValueError(
                f"Expected each prefix in `blocks` to match layers of the model. "
                f"Received: blocks={prefixes!r}; no layer name starts with {prefix!r}"
            )
        for node in block_nodes:
            if id(node) in owner:
                raise ValueError(
                    f"Expected the prefixes in `blocks` to match disjoint layers. "
                    f"Received: blocks={prefixes!r}; layer '{node.operation.name}' "
                    f"matches {owner[id(node)]!r} and {prefix!r}"
                )
            owner[id(node)] = prefix
        produced = {id(x) for n in block_nodes for x in n.outputs}
        ins, outs = {}, {}
        for n in block_nodes:
            for x in n.input_tensors:
                if id(x) not in produced:
                    ins[id(x)] = x
        inside = {id(n) for n in block_nodes}
        for n in nodes:
            if id(n) not in inside:
                for x in n.input_tensors:
                    if id(x) in produced:
                        outs[id(x)] = x
        for n in block_nodes:
            for x in n.outputs:
                if id(x) in outputs:
                    outs[id(x)] = x
        if len(ins) != 1 or len(outs) != 1:
            raise ValueError(
                f"Expected the layers starting with {prefix!r} to form a block with "
                f"one input tensor and one output tensor. Received: blocks="
                f"{prefixes!r}; it takes {len(ins)} tensor(s) from outside and "
                f"gives {len(outs)} tensor(s) out"
            )
        units.append((block_nodes, *ins.values(), *outs.values()))
    return [units], list(prefixes)


def find_blocks(model, blocks=None):
    """Finds the repeated blocks of a model.

    Without `blocks`, cuts the graph at every tensor that all paths from
    input to output pass through, gives each piece between two cuts a
    signature (layer classes, configs without names, wiring) and collects
    runs of consecutive pieces whose signatures repeat: each run is a stack,
    each repetition a block. This finds stacks of identical layers,
    residual blocks and Transformer encoder blocks; check its answer, or
    name the blocks yourself.

    Args:
        model: a built Functional or Sequential `keras.Model`.
        blocks: optional list of layer-name prefixes, one per block (for
            example `["enc_0_", "enc_1_", "enc_2_"]`); they form one stack.
            Defaults to None (automatic).

    Returns:
        A list of stacks, each a list of `Block`s in graph order.

    Raises:
        ValueError: if a prefix matches no layer, or its layers do not form
            a block with a single input and a single output.
    """
    graph = _graph.functional_graph(model)
    nodes = _graph.topological_nodes(graph)
    if blocks is None:
        stacks = _auto_blocks(graph, nodes)
        return [
            [Block(name, *unit) for name, unit in zip(_name_blocks([u[0] for u in s]), s)]
            for s in stacks
        ]
    stacks, names = _prefix_blocks(graph, nodes, blocks)
    names = [n.rstrip("_-/.") or n for n in names]
    return [[Block(name, *unit) for name, unit in zip(names, stacks[0])]]


def keep_blocks_report(model, keep, blocks=None):
    """`keep_blocks` returning `(student, report lines)`."""
    stacks = find_blocks(model, blocks)
    all_names = [b.name for s in stacks for b in s]
    if isinstance(keep, bool) or not isinstance(keep, (int, list, tuple, set)):
        raise TypeError(
            "Expected `keep` to be an int k (keep every k-th block) or a list "
            f"of block names. Received: keep={keep!r}"
        )
    if isinstance(keep, int):
        if keep < 1:
            raise ValueError(f"Expected `keep` to be an int >= 1. Received: keep={keep!r}")
        kept = {b.name for s in stacks for i, b in enumerate(s) if i % keep == 0}
    else:
        unknown = [k for k in keep if k not in all_names]
        if unknown:
            raise ValueError(
                f"Expected `keep` to name blocks of the model {all_names}. Received: keep={keep!r}"
            )
        kept = set(keep)
    skip, aliases, lines = set(), {}, ["depth: kept blocks"]
    for stack in stacks:
        for block in stack:
            if block.name in kept:
                continue
            if not block.removable:
                raise ValueError(
                    f"Cannot remove block '{block.name}': its input shape "
                    f"{block.input_shape} differs from its output shape "
                    f"{block.output_shape}. Received: keep={keep!r}"
                )
            skip.update(id(n) for n in block._nodes)
            aliases[id(block._output)] = block._input
        names = [b.name for b in stack]
        lines.append(
            f"  {len(stack)} blocks {names[0]} ... {names[-1]}: kept "
            + ", ".join(n for n in names if n in kept)
            if any(n in kept for n in names)
            else f"  {len(stack)} blocks {names[0]} ... {names[-1]}: kept none"
        )
    if not stacks:
        lines.append("  no repeated blocks found")
    rebuild = _graph.Rebuild(model, skip=skip, aliases=aliases)
    return rebuild.run(_graph.copy_make(rebuild)), lines


def keep_blocks(model, keep, *, blocks=None, verbose=False):
    """Keeps a subset of a model's repeated blocks, copying their weights.

    The depth half of weight transfer: a shallower student initialised from
    the teacher's own blocks, as DistilBERT took one layer in two of BERT.
    Removed blocks are bypassed: the tensor that fed a removed block feeds
    whatever its output fed.

    Args:
        model: a built Functional or Sequential `keras.Model`.
        keep: int k to keep every k-th block of each stack (blocks 0, k,
            2k, ...; `keep=1` keeps all), or a list of block names (as given
            by `find_blocks`) to keep; every other block is removed.
        blocks: optional list of layer-name prefixes, one per block; see
            `find_blocks`. Defaults to None (automatic).
        verbose: print what was kept. Defaults to False.

    Returns:
        A new Functional `keras.Model` whose layers keep the teacher's names
        and weights.

    Raises:
        ValueError: if a block to remove changes the shape of its input, or
            `keep` names unknown blocks.

    Example:

    ```python
    print(kdkeras.transfer.find_blocks(teacher))
    student = kdkeras.transfer.keep_blocks(teacher, 2)
    ```

    Reference:
        Sanh et al., 2019, "DistilBERT, a distilled version of BERT"
        (https://arxiv.org/abs/1910.01108).
    """
    student, lines = keep_blocks_report(model, keep, blocks=blocks)
    if verbose:
        print("\n".join(lines))
    return student
