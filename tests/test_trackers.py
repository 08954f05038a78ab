"""`LogMeans`, the Distiller's logs in one metric, against a `keras.metrics.Mean` per log."""

import keras
import numpy as np
import pytest

from kdkeras.distill.trackers import LogMeans


def test_log_means_follow_a_mean_per_log_with_absent_logs_untouched():
    rng = np.random.default_rng(0)
    logs = LogMeans(["a", "b", "c"])
    means = {n: keras.metrics.Mean(name=n) for n in "abc"}
    for step in range(6):
        weight = float(rng.integers(1, 9))
        # "b" is only logged on even steps, "c" never: a Mean each for reference.
        values = {"a": rng.normal(), **({"b": rng.normal()} if step % 2 == 0 else {})}
        logs.update_state(values, weight)
        for n, v in values.items():
            means[n].update_state(v, sample_weight=weight)
    result = logs.result()
    assert list(result) == ["a", "b", "c"]
    for n in "abc":
        assert float(result[n]) == pytest.approx(float(means[n].result()), rel=1e-6)
    assert float(result["c"]) == 0.0
    logs.reset_state()
    assert all(float(v) == 0.0 for v in logs.result().values())


def test_log_means_refuse_unknown_and_repeated_names():
    with pytest.raises(ValueError, match="distinct log names"):
        LogMeans(["a", "a"])
    with pytest.raises(ValueError, match=r"Expected logs among \['a'\]. Received: \['z'\]"):
        LogMeans(["a"]).update_state({"z": 1.0}, 1.0)
