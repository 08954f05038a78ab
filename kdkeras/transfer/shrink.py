"""`shrink`: depth, width and low rank in one call."""

from kdkeras.transfer import _graph
from kdkeras.transfer.depth import keep_blocks_report
from kdkeras.transfer.low_rank import low_rank_report
from kdkeras.transfer.width import prune_width_report

__all__ = ["shrink"]


def shrink(
    teacher,
    width=None,
    depth=None,
    rank=None,
    *,
    params=None,
    blocks=None,
    scoring="l1",
    data=None,
    verbose=True,
):
    """Derives a smaller student from the teacher's own parameters.

    Applies, in this order, the depth, width and low-rank transfers (each
    skipped when its argument is None) and returns a plain Functional
    `keras.Model` initialised from the teacher: the same layer classes, no
    kdkeras object inside, so it trains, saves and exports like any Keras
    model. With nothing to remove, the student reproduces the teacher's
    outputs. A summary of what was kept and the parameter counts before and
    after is printed.

    Args:
        teacher: a built Functional or Sequential `keras.Model`.
        width: units to keep, see `prune_width`: a share in (0, 1] for every
            layer that can lose units, or a dict of layer name -> share or
            count. Defaults to None.
        depth: blocks to keep, see `keep_blocks`: int k (every k-th block of
            each stack) or a list of block names. Defaults to None.
        rank: low-rank factorisation, see `low_rank`: an int rank, a float
            share of spectral energy, or a dict of layer name -> either.
            Defaults to None.
        params: instead of `rank`, a parameter budget per factorised layer
            (int count, float share, or dict). Defaults to None.
        blocks: layer-name prefixes of the blocks for `depth`, see
            `find_blocks`. Defaults to None (automatic).
        scoring: unit ranking for `width`: `"l1"`, `"l2"` or
            `"activation"`. Defaults to `"l1"`.
        data: sample inputs for `scoring="activation"`. Defaults to None.
        verbose: print the summary. Defaults to True.

    Returns:
        The student, a Functional `keras.Model`.

    Raises:
        ValueError: for a layer or block that cannot be transformed as asked
            (the message names it), or arguments out of range.
        TypeError: if `teacher` is a subclassed model.

    Example:

    ```python
    student = kdkeras.transfer.shrink(teacher, width=0.5, depth=2)
    distiller = kdkeras.Distiller(teacher=teacher, student=student, ...)
    ```

    Reference:
        Sanh et al., 2019, "DistilBERT, a distilled version of BERT"
        (https://arxiv.org/abs/1910.01108).
    """
    _graph.functional_graph(teacher, arg="teacher")
    before = teacher.count_params()
    lines = [f"shrink '{teacher.name}'"]
    student = teacher
    if depth is not None:
        student, more = keep_blocks_report(student, depth, blocks=blocks)
        lines += more
    if width is not None:
        student, more = prune_width_report(student, width, scoring=scoring, data=data)
        lines += more
    if rank is not None or params is not None:
        student, more = low_rank_report(student, rank=rank, params=params)
        lines += more
    if student is teacher:
        rebuild = _graph.Rebuild(teacher)
        student = rebuild.run(_graph.copy_make(rebuild))
        lines.append("  nothing removed: a copy of the teacher")
    after = student.count_params()
    lines.append(f"parameters: {before:,} -> {after:,} ({after / before:.1%})")
    if verbose:
        print("\n".join(lines))
    return student
