"""Proposing teacher/student layer pairs for feature distillation.

`propose_layer_pairs(teacher, student)` traces both models once and pairs
the ends of their stages by relative depth.
"""

import keras

from kdkeras.distill import taps
from kdkeras.utils import tables

__all__ = ["propose_layer_pairs"]


def _shape_of(tensor):
    return taps.free_batch_axis(tensor.shape)


def _candidate_layers(model):
    """`(layer, shape)` of leaf layers with image (rank 4) or vector outputs.

    In the order they run, the last call kept per layer; layers whose output
    equals their input (activations, dropout) replace the layer before them,
    so a block is represented by its activated output. The model's final
    layer is left out.
    """
    leaves = [layer for layer in taps.iter_layers(model) if not isinstance(layer, keras.Model)]
    order = {}

    def fn(inputs):
        with taps.record_calls(leaves) as calls:
            outputs = model(inputs, training=False)
        for layer, out in calls:
            if keras.tree.is_nested(out):
                continue
            order.pop(id(layer), None)
            order[id(layer)] = (layer, _shape_of(out))
        return keras.tree.flatten(outputs)

    taps.trace(model, fn)
    entries = list(order.values())[:-1]  # the last one is the model output
    picked = []
    for layer, shape in entries:
        if len(shape) not in (2, 4):
            continue
        if picked and picked[-1][1] == shape and _is_shape_preserving(layer):
            picked[-1] = (layer, shape)
        else:
            picked.append((layer, shape))
    return picked


def _is_shape_preserving(layer):
    return isinstance(
        layer,
        (
            keras.layers.Activation,
            keras.layers.ReLU,
            keras.layers.LeakyReLU,
            keras.layers.Dropout,
            keras.layers.BatchNormalization,
            keras.layers.LayerNormalization,
        ),
    )


def _stage_ends(candidates):
    """Last layer of each run of equal spatial size, plus the last vector."""
    ends = []
    for i, (_, shape) in enumerate(candidates):
        nxt = candidates[i + 1][1] if i + 1 < len(candidates) else None
        if len(shape) == 4 and (nxt is None or nxt[1:3] != shape[1:3]):
            ends.append(i)
    vectors = [i for i, (_, shape) in enumerate(candidates) if len(shape) == 2]
    if vectors:
        ends.append(vectors[-1])
    return sorted(set(ends))


def propose_layer_pairs(teacher, student, n=3, verbose=True):
    """Proposes teacher/student layer pairs for feature distillation.

    Both models are traced once (symbolically). Candidates are the layers
    whose outputs are image features `(batch, height, width, channels)` or
    vectors `(batch, units)`; among them, the ends of stages (the last layer
    before the spatial size changes, and the last vector before the output)
    are preferred, as FitNets, AT and CRD tap them. Student stage ends are
    paired with the teacher stage end closest in relative depth (the share
    of the candidate layers run once the layer's output exists, in (0, 1]),
    preferring the same kind of feature (image or vector).

    Args:
        teacher: the teacher model (built).
        student: the student model (built).
        n: the number of pairs to propose. Defaults to 3.
        verbose: print a table of the pairs, their shapes and whether an
            adapter will be needed. Defaults to `True`.

    Returns:
        A list of up to `n` `(teacher_layer_name, student_layer_name)`
        tuples, shallow to deep, ready for `teacher_layer_name=` /
        `student_layer_name=` of a feature term.

    Example:

    ```python
    pairs = kdkeras.propose_layer_pairs(teacher, student, n=2)
    terms = [kdkeras.FeatureDistillation(teacher_layer_name=t,
                                         student_layer_name=s)
             for t, s in pairs]
    ```
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"Expected `n` to be an integer >= 1. Received: n={n!r}")
    t_cands = _candidate_layers(teacher)
    s_cands = _candidate_layers(student)
    if not t_cands or not s_cands:
        if verbose:
            taps.print_message("No layer with image or vector features found to pair.")
        return []

    def depth(index, total):
        # The share of the candidates computed once this layer's output exists.
        return (index + 1) / total

    t_ends = _stage_ends(t_cands) or list(range(len(t_cands)))
    s_ends = _stage_ends(s_cands) or list(range(len(s_cands)))
    if len(s_ends) > n:
        # Keep the deepest stage ends, spread evenly from the shallowest.
        step = (len(s_ends) - 1) / max(n - 1, 1)
        s_ends = sorted({s_ends[round(len(s_ends) - 1 - k * step)] for k in range(n)})
    pairs, rows, used = [], [], set()
    for si in s_ends:
        s_layer, s_shape = s_cands[si]
        s_depth = depth(si, len(s_cands))
        scored = []
        for ti in t_ends:
            t_layer, t_shape = t_cands[ti]
            penalty = 0.0 if len(t_shape) == len(s_shape) else 1.0
            penalty += 0.5 if ti in used else 0.0
            scored.append((abs(depth(ti, len(t_cands)) - s_depth) + penalty, ti))
        ti = min(scored)[1]
        used.add(ti)
        t_layer, t_shape = t_cands[ti]
        pairs.append((t_layer.name, s_layer.name))
        rows.append(
            (
                t_layer.name,
                str(t_shape[1:]),
                s_layer.name,
                str(s_shape[1:]),
                "no" if t_shape == s_shape else "yes",
            )
        )
    if verbose:
        taps.print_message(
            tables.format_table(
                rows,
                ("teacher layer", "shape", "student layer", "shape", "adapter"),
                markdown=False,
                title="Proposed feature pairs (by relative depth):",
            )
        )
    return pairs
