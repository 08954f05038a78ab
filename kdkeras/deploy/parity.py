"""The parity check: an artifact's outputs against its Keras model's."""

import numpy as np

from kdkeras.deploy import runners
from kdkeras.deploy.errors import ParityError

__all__ = ["DEFAULT_ATOL", "DEFAULT_BATCH_SIZES", "check_parity", "keras_outputs", "parity_figures"]

DEFAULT_ATOL = 1e-4
DEFAULT_BATCH_SIZES = (1, 16)


def keras_outputs(model, inputs, batch_size=256):
    """The model's inference outputs on a list of arrays, as NumPy arrays."""
    import keras

    def run(chunk):
        out = model(chunk[0] if len(chunk) == 1 else chunk, training=False)
        return [keras.ops.convert_to_numpy(o) for o in keras.tree.flatten(out)]

    n = len(inputs[0])
    parts = [run(runners.take(inputs, i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    return [np.concatenate(p, axis=0) for p in zip(*parts)]


def parity_figures(reference, outputs):
    """Max absolute difference and argmax agreement between output lists."""
    if len(reference) != len(outputs):
        raise ParityError(
            f"Expected {len(reference)} output(s) from the artifact. Received: {len(outputs)}"
        )
    max_diff, agreement = 0.0, None
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
        max_diff = max(max_diff, float(np.max(diff)) if diff.size else 0.0)
        if ref.ndim >= 2 and ref.shape[-1] >= 2:
            agree = float(np.mean(ref.argmax(-1) == out.argmax(-1)))
            agreement = agree if agreement is None else min(agreement, agree)
    return max_diff, agreement


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
):
    """Compares a runner's outputs to the Keras model's at each batch size.

    Args:
        model: the Keras model (the reference).
        runner: an object with `run(list_of_arrays) -> list_of_arrays`, e.g.
            `kdkeras.bench.load_runner(path)`.
        inputs: list of arrays (the samples).
        batch_sizes: the artifact is run in chunks of each of these sizes.
            Defaults to `(1, 16)`.
        atol: the largest absolute difference allowed (`gate="diff"`).
            Defaults to `1e-4`.
        min_agreement: the smallest share of samples whose argmax must
            agree. Defaults to `0.99`.
        gate: `"diff"` (float artifacts: `max_abs_diff <= atol` and
            agreement) or `"agreement"` (quantized artifacts, where the
            difference is expected). Defaults to `"diff"`.
        reference: precomputed Keras outputs for `inputs`. Defaults to
            computing them.
        data: `"given"` or `"random"`, recorded in the report.

    Returns:
        A `dict` of parity figures, with `passed`.
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
        diff, agree = parity_figures(reference, outputs)
        per_batch[str(int(bs))] = {"max_abs_diff": diff, "agreement": agree}
    max_diff = max(v["max_abs_diff"] for v in per_batch.values())
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
    ok_agree = agreement is None or agreement >= min_agreement
    passed = ok_agree and (gate == "agreement" or max_diff <= atol)
    return {
        "passed": bool(passed),
        "gate": gate,
        "max_abs_diff": max_diff,
        "agreement": agreement,
        "atol": atol if gate == "diff" else None,
        "min_agreement": min_agreement,
        "num_samples": int(len(inputs[0])),
        "data": data,
        "batch_sizes": per_batch,
    }
