"""The parity check: an artifact's outputs against its Keras model's.

Two bounds, both required for a float artifact:

- absolute: `max|ref - out| <= atol * max(1, max|ref|)`: `atol` itself
  for outputs up to unit scale, growing with the scale above it;
- relative to the output scale: `max|ref - out| / max|ref| <= rtol`, per
  output (the largest ratio over outputs is reported).

The absolute bound alone says nothing about outputs far from unit scale: a
random-weight MobileNetV2 at 96x96 outputs logits of ~1e-10, where any
artifact (all zeros included) is within `atol=1e-4`. The relative bound
divides by the largest reference magnitude rather than element by element,
so that outputs crossing zero (logits) do not blow it up; an all-zeros
artifact then scores exactly 1.0.

The absolute bound grows above unit scale because float32 rounding does:
a random-weight NASNetMobile outputs logits of ~400, where the SavedModel
(TensorFlow itself, at another batch size) differs from Keras by 2e-4 and
ONNX by 5e-4, a relative 1e-6; a fixed `atol=1e-4` failed all three
formats. Below unit scale the bound is `atol`, as before. `DEFAULT_RTOL = 1e-3` sits well above
float32 conversion error (the largest figure over the keras.applications zoo
in `benchmarks/zoo_export.py` is 3e-6) and far below 1.0.
"""

import numpy as np

from kdkeras.deploy import runners
from kdkeras.deploy import signatures
from kdkeras.deploy.errors import ParityError

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_RTOL",
    "check_parity",
    "difference_figures",
    "keras_outputs",
    "parity_figures",
]

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3
DEFAULT_BATCH_SIZES = (1, 16)


def keras_outputs(model, inputs, batch_size=256):
    """The model's inference outputs on a list of arrays, as NumPy arrays."""
    import keras

    def run(chunk):
        out = model(signatures.pack_inputs(model, chunk), training=False)
        return [keras.ops.convert_to_numpy(o) for o in keras.tree.flatten(out)]

    n = len(inputs[0])
    parts = [run(runners.take(inputs, i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    return [np.concatenate(p, axis=0) for p in zip(*parts)]


def difference_figures(reference, outputs):
    """Max absolute and relative difference and argmax agreement between output lists.

    The relative difference of one output is `max|ref - out| / max|ref|`
    (0 when both are all zeros, infinite when only the reference is); the
    largest over outputs is returned.

    Returns:
        A `dict`: `max_abs_diff`, `max_rel_diff`, `agreement` (`None` for
        outputs without classes).
    """
    if len(reference) != len(outputs):
        raise ParityError(
            f"Expected {len(reference)} output(s) from the artifact. Received: {len(outputs)}"
        )
    max_diff, max_rel, agreement = 0.0, 0.0, None
    for ref, out in zip(reference, outputs):
        if ref.shape != out.shape:
            raise ParityError(
                f"Expected an artifact output shaped {ref.shape}. Received: shape={out.shape}"
            )
        ref64, out64 = ref.astype("float64"), out.astype("float64")
        # Non-finite values count as an infinite difference unless both sides
        # hold the same value there (NaN != NaN, so compare NaN masks too):
        # a NaN must never hide a difference elsewhere.
        same_nonfinite = (ref64 == out64) | (np.isnan(ref64) & np.isnan(out64))
        diff = np.where(
            np.isfinite(ref64) & np.isfinite(out64),
            np.abs(ref64 - out64),
            np.where(same_nonfinite, 0.0, np.inf),
        )
        worst = float(np.max(diff)) if diff.size else 0.0
        finite_ref = np.abs(ref64[np.isfinite(ref64)])
        scale = float(np.max(finite_ref)) if finite_ref.size else 0.0
        rel = worst / scale if scale > 0 else (0.0 if worst == 0 else np.inf)
        max_diff = max(max_diff, worst)
        max_rel = max(max_rel, float(rel))
        if ref.ndim >= 2 and ref.shape[-1] >= 2:
            agree = float(np.mean(ref.argmax(-1) == out.argmax(-1)))
            agreement = agree if agreement is None else min(agreement, agree)
    return {"max_abs_diff": max_diff, "max_rel_diff": max_rel, "agreement": agreement}


def parity_figures(reference, outputs):
    """Max absolute difference and argmax agreement between output lists.

    Kept for callers of the two-figure form; `difference_figures` adds the
    relative difference.
    """
    figures = difference_figures(reference, outputs)
    return figures["max_abs_diff"], figures["agreement"]


def check_parity(
    model,
    runner,
    inputs,
    *,
    batch_sizes=DEFAULT_BATCH_SIZES,
    atol=DEFAULT_ATOL,
    min_agreement=0.99,
    gate="diff",
    reference=None,
    data="given",
    rtol=DEFAULT_RTOL,
):
    """Compares a runner's outputs to the Keras model's at each batch size.

    Args:
        model: the Keras model (the reference).
        runner: an object with `run(list_of_arrays) -> list_of_arrays`, e.g.
            `kdkeras.deploy.load_runner(path)`.
        inputs: list of arrays (the samples).
        batch_sizes: the artifact is run in chunks of each of these sizes.
            Defaults to `(1, 16)`.
        atol: the largest absolute difference allowed at output scales up
            to 1, `atol * max|ref|` above (`gate="diff"`). Defaults to `1e-4`.
        rtol: the largest difference allowed relative to the output scale,
            `max|ref - out| / max|ref|` (`gate="diff"`). Defaults to `1e-3`.
        min_agreement: the smallest share of samples whose argmax must
            agree. Defaults to `0.99`.
        gate: `"diff"` (float artifacts: `max_abs_diff <= atol_bound`,
            `max_rel_diff <= rtol` and agreement) or `"agreement"` (quantized artifacts, where the
            difference is expected). Defaults to `"diff"`.
        reference: precomputed Keras outputs for `inputs`. Defaults to
            computing them.
        data: `"given"` or `"random"`, recorded in the report.

    Returns:
        A `dict` of parity figures, with `passed` and `failed` (the names
        of the bounds that failed: `"atol"`, `"rtol"`, `"min_agreement"`).
    """
    if not len(inputs) or not len(inputs[0]):
        raise ValueError(
            "Expected at least one sample to check parity on. "
            f"Received: {len(inputs[0]) if len(inputs) else 0} samples"
        )
    if reference is None:
        reference = keras_outputs(model, inputs)
    if not all(np.all(np.isfinite(r)) for r in reference):
        raise ParityError(
            "Expected finite outputs from the Keras model on the parity "
            "samples. Received: NaN or Inf in the reference outputs",
            {"passed": False, "reference_finite": False},
        )
    per_batch = {}
    for bs in batch_sizes:
        outputs = runners.run_batched(runner, inputs, int(bs))
        per_batch[str(int(bs))] = difference_figures(reference, outputs)
    max_diff = max(v["max_abs_diff"] for v in per_batch.values())
    max_rel = max(v["max_rel_diff"] for v in per_batch.values())
    agreements = [v["agreement"] for v in per_batch.values() if v["agreement"] is not None]
    agreement = min(agreements) if agreements else None
    if gate == "agreement" and agreement is None:
        raise ParityError(
            "The agreement gate needs class outputs (last dimension >= 2); "
            "this model has none, so int8 parity cannot be judged by "
            "agreement. Received: output shapes "
            f"{[tuple(r.shape) for r in reference]}",
            {"passed": False, "agreement": None},
        )
    failed = []
    scale = max((float(np.max(np.abs(r))) for r in reference if r.size), default=0.0)
    atol_bound = atol * max(1.0, scale)
    if gate == "diff" and not max_diff <= atol_bound:
        failed.append("atol")
    if gate == "diff" and not max_rel <= rtol:
        failed.append("rtol")
    if agreement is not None and agreement < min_agreement:
        failed.append("min_agreement")
    return {
        "passed": not failed,
        "failed": failed,
        "gate": gate,
        "max_abs_diff": max_diff,
        "max_rel_diff": max_rel,
        "agreement": agreement,
        "atol": atol if gate == "diff" else None,
        "atol_bound": atol_bound if gate == "diff" else None,
        "rtol": rtol if gate == "diff" else None,
        "output_scale": scale,
        "min_agreement": min_agreement,
        "num_samples": int(len(inputs[0])),
        "data": data,
        "batch_sizes": per_batch,
    }
