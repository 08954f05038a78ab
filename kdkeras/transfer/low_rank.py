"""Low rank: replace a Dense or Conv kernel by two factors of a truncated SVD.

A Dense kernel `W` (in x out) becomes `Dense(r, use_bias=False)` followed by
`Dense(out)` with kernels `U_r sqrt(S_r)` and `sqrt(S_r) V_r^T`. A Conv kernel
(k..., in, out) is read as a (prod(k) * in) x out matrix: the first factor is
a Conv with the same kernel size, strides, padding and dilation and r filters,
no bias; the second a 1x1 Conv with the original filters, bias and
activation. The product of the two factors is the best rank-r approximation
of the kernel (Eckart-Young); at full rank the layer is reproduced.
"""

import numpy as np

from kdkeras.transfer import _graph

__all__ = ["energy_rank", "factors", "low_rank", "low_rank_report"]

_FACTORABLE = {"Dense", "Conv1D", "Conv2D", "Conv3D"}


def _matrix(layer):
    """The kernel as a matrix, with `(rows, cols)` and the bias parameter count."""
    kernel = np.asarray(layer.kernel.numpy(), dtype="float64")
    matrix = kernel.reshape(-1, kernel.shape[-1])
    bias = kernel.shape[-1] if layer.get_config().get("use_bias", False) else 0
    return kernel, matrix, bias


def _check_factorable(layer, arg, value):
    cls = type(layer).__name__
    problem = None
    if cls not in _FACTORABLE:
        problem = "is not a Dense, Conv1D, Conv2D or Conv3D layer"
    elif layer.get_config().get("groups", 1) != 1:
        problem = "is a grouped convolution"
    elif getattr(layer, "quantization_mode", None) or getattr(layer, "lora_enabled", False):
        problem = "is quantized or has LoRA weights"
    if problem:
        raise ValueError(
            f"Cannot factorise layer '{layer.name}' ({cls}): it {problem}. "
            f"Received: {arg}={value!r}"
        )


def energy_rank(singular_values, energy):
    """Smallest rank whose singular values keep `energy` of sum(s**2)."""
    power = np.asarray(singular_values, dtype="float64") ** 2
    share = np.cumsum(power) / power.sum()
    # A relative tolerance, so that energy=1.0 is met despite rounding.
    return int(np.searchsorted(share, energy - 1e-12) + 1)


def _choose_rank(layer, rank, params, arg, value):
    _, matrix, bias = _matrix(layer)
    rows, cols = matrix.shape
    full = min(rows, cols)
    if rank is not None:
        if isinstance(rank, float):
            if not 0.0 < rank <= 1.0:
                raise ValueError(
                    "Expected a float `rank` to be a share of spectral energy "
                    f"in (0, 1]. Received: {arg}={value!r}"
                )
            return energy_rank(np.linalg.svd(matrix, compute_uv=False), rank)
        if rank > full:
            raise ValueError(
                f"Expected a rank of at most {full} for layer '{layer.name}' "
                f"(kernel {rows}x{cols}). Received: {arg}={value!r}"
            )
        return rank
    budget = params if isinstance(params, int) else params * (rows * cols + bias)
    r = int((budget - bias) // (rows + cols))
    if r < 1:
        raise ValueError(
            f"A budget of {budget:g} parameters is too small to factorise layer "
            f"'{layer.name}' (kernel {rows}x{cols}: one rank costs {rows + cols}). "
            f"Received: {arg}={value!r}"
        )
    return min(r, full)


def _is_value(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return v > 0


def factors(kernel, rank):
    """The two kernels of a rank-`rank` factorisation of a Dense/Conv kernel."""
    kernel = np.asarray(kernel, dtype="float64")
    matrix = kernel.reshape(-1, kernel.shape[-1])
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    root = np.sqrt(s[:rank])
    first = (u[:, :rank] * root).reshape(*kernel.shape[:-1], rank)
    second = (root[:, None] * vt[:rank]).reshape(*([1] * (kernel.ndim - 2)), rank, kernel.shape[-1])
    return first.astype("float32"), second.astype("float32")


def low_rank_report(model, rank=None, params=None, layers=None):
    """`low_rank` returning `(student, report lines)`."""
    if (rank is None) == (params is None):
        raise ValueError(
            "Expected exactly one of `rank` and `params`. "
            f"Received: rank={rank!r}, params={params!r}"
        )
    arg, value = ("rank", rank) if rank is not None else ("params", params)
    graph = _graph.functional_graph(model)
    by_name = {n.operation.name: n.operation for n in _graph.topological_nodes(graph)}
    if isinstance(value, dict):
        if layers is not None:
            raise ValueError(
                f"Expected `layers` to be None when `{arg}` is a dict. Received: layers={layers!r}"
            )
        chosen, explicit = dict(value), True
    else:
        explicit = layers is not None
        if layers is None:
            layers = [n for n, l in by_name.items() if type(l).__name__ in _FACTORABLE]
        chosen = {name: value for name in layers}
    for name, v in chosen.items():
        if not _is_value(v) or (isinstance(v, float) and v > 1):
            raise ValueError(
                f"Expected `{arg}` values to be positive ints"
                + (" or shares in (0, 1]" if arg == "params" else " or energy shares in (0, 1]")
                + f". Received: {arg}={value!r}"
            )
        if name not in by_name:
            raise ValueError(
                f"Expected layer names of the model {sorted(by_name)}. "
                f"Received: {arg if isinstance(value, dict) else 'layers'}="
                f"{value if isinstance(value, dict) else layers!r}"
            )
        _check_factorable(by_name[name], arg, value)

    plan, lines = {}, [f"low rank: truncated SVD by {arg}"]
    for name, v in chosen.items():
        layer = by_name[name]
        _, matrix, bias = _matrix(layer)
        rows, cols = matrix.shape
        if not explicit and arg == "rank" and isinstance(v, int) and v >= min(rows, cols):
            lines.append(f"  {name}: kept whole, its kernel {rows}x{cols} has rank <= {v}")
            continue
        r = _choose_rank(
            layer, v if arg == "rank" else None, v if arg == "params" else None, arg, value
        )
        before, after = rows * cols + bias, r * (rows + cols) + bias
        if after >= before and not explicit:
            lines.append(f"  {name}: kept whole, rank {r} would not save parameters")
            continue
        plan[name] = r
        lines.append(f"  {name}: kernel {rows}x{cols} -> rank {r} ({before:,} -> {after:,} params)")
    if not plan:
        lines.append("  nothing factorised")

    rebuild = _graph.Rebuild(model)
    taken = set(by_name)

    def replace(layer):
        if layer.name not in plan:
            return None
        r = plan[layer.name]
        config = layer.get_config()
        name = f"{layer.name}_lowrank"
        while name in taken:
            name += "_"
        taken.add(name)
        key = "units" if type(layer).__name__ == "Dense" else "filters"
        first = _graph.clone_layer(
            layer,
            name=name,
            use_bias=False,
            activation="linear",
            activity_regularizer=None,
            bias_regularizer=None,
            **{key: r},
        )
        updates = {}
        if key == "filters":
            ones = [1] * len(config["kernel_size"])
            updates = dict(kernel_size=ones, strides=ones, dilation_rate=ones, padding="valid")
        second = _graph.clone_layer(layer, **updates)
        a, b = factors(layer.kernel.numpy(), r)
        rebuild.defer(first, [a])
        rebuild.defer(second, [b] + ([layer.bias.numpy()] if config.get("use_bias") else []))

        def call(*args, **kwargs):
            return second(first(*args, **kwargs))

        return call

    return rebuild.run(_graph.copy_make(rebuild, replace)), lines


def low_rank(model, rank=None, *, params=None, layers=None, verbose=False):
    """Replaces Dense / Conv kernels by two factors of their truncated SVD.

    Each chosen layer becomes two layers whose kernels multiply to the best
    rank-r approximation of the original kernel (see the module docstring for
    the Conv case); the bias and activation stay on the second one, which
    keeps the original layer's name (the first is named `<name>_lowrank`).

    Args:
        model: a built Functional or Sequential `keras.Model`.
        rank: the rank for every chosen layer: an int, or a float in (0, 1]
            for the smallest rank keeping that share of the kernel's spectral
            energy (sum of squared singular values); or a dict of layer name
            -> int or float, which also chooses the layers. Give `rank` or
            `params`.
        params: the parameter budget of every factorised layer: an int
            count, or a float in (0, 1] share of the layer's own parameters;
            the rank is the largest that fits. Or a dict of layer name ->
            budget.
        layers: names of the layers to factorise. Defaults to None: every
            Dense and Conv layer whose factorisation saves parameters.
        verbose: print what was factorised. Defaults to False.

    Returns:
        A new Functional `keras.Model`; layers not factorised keep their
        weights.

    Raises:
        ValueError: if a named layer is not a Dense or (ungrouped) Conv
            layer (the message names it), a rank exceeds the kernel's, or a
            budget is too small for rank 1.

    Example:

    ```python
    student = kdkeras.transfer.low_rank(teacher, 0.9)  # keep 90% energy
    student = kdkeras.transfer.low_rank(teacher, {"dense_1": 16})
    ```

    Reference:
        Denton et al., 2014, "Exploiting Linear Structure Within
        Convolutional Networks for Efficient Evaluation"
        (https://arxiv.org/abs/1404.0736).
    """
    student, lines = low_rank_report(model, rank=rank, params=params, layers=layers)
    if verbose:
        print("\n".join(lines))
    return student
