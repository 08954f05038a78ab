"""On-policy data: student-written continuations, prompts masked, teacher-scored."""

import keras
import numpy as np
import pytest

import kdkeras
from kdkeras import losses
from kdkeras.distill import sample_continuations

VOCAB = 8


class Counter(keras.Model):
    """A causal 'language model' whose next token is the current one plus 1 (mod 8)."""

    def call(self, x, training=None):
        return keras.ops.one_hot((x + 1) % VOCAB, VOCAB) * 50.0


class Uniform(keras.Model):
    def call(self, x, training=None):
        return keras.ops.zeros(keras.ops.shape(x) + (VOCAB,))


def test_continuations_follow_the_model_and_mask_the_prompt():
    prompts = np.array([[1, 2], [5, 6]])
    tokens, mask = sample_continuations(Counter(), prompts, steps=3, seed=0)
    np.testing.assert_array_equal(tokens, [[1, 2, 3, 4, 5], [5, 6, 7, 0, 1]])
    assert tokens.dtype == "int32"
    # Position i predicts token i + 1: only the targets the student wrote count.
    np.testing.assert_array_equal(mask, [[0, 1, 1, 1], [0, 1, 1, 1]])


def test_samples_are_repeatable_and_follow_the_temperature():
    prompts = np.zeros((2000, 1), "int32")
    a, _ = sample_continuations(Uniform(), prompts, steps=1, seed=3)
    b, _ = sample_continuations(Uniform(), prompts, steps=1, seed=3)
    np.testing.assert_array_equal(a, b)
    counts = np.bincount(a[:, 1], minlength=VOCAB) / 2000
    np.testing.assert_allclose(counts, 1 / VOCAB, atol=0.03)  # uniform logits, uniform samples
    tokens, _ = sample_continuations(Counter(), prompts[:50], steps=1, temperature=100.0, seed=0)
    assert len(set(tokens[:, 1].tolist())) > 3  # 50 / T = 0.5 nats: far from greedy


def test_distilling_on_samples_scores_only_the_generated_tokens():
    def lm(width, seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((None,), dtype="int32")
        h = keras.layers.Embedding(VOCAB, width)(inputs)
        return keras.Model(inputs, keras.layers.Dense(VOCAB)(h))

    teacher, student = lm(8, 1), lm(4, 2)
    distiller = kdkeras.Distiller(teacher, student, kdkeras.GeneralizedJSD(), student_loss_weight=0)
    distiller.compile(optimizer="sgd")
    prompts = np.random.default_rng(0).integers(0, VOCAB, (6, 3))
    tokens, mask = sample_continuations(student, prompts, steps=4, seed=1)
    x = tokens[:, :-1]
    values = np.asarray(losses.generalized_jsd_loss(teacher(x), student(x)))
    want = float((values * mask).sum() / mask.sum())
    got = distiller.evaluate(x, sample_weight=mask, batch_size=6, verbose=0, return_dict=True)
    assert got["loss"] == pytest.approx(want, rel=1e-5)
    assert abs(want - values.mean()) > 1e-3 * want  # the prompt's positions would change it
    history = distiller.fit(x, sample_weight=mask, batch_size=6, epochs=2, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"prompts": np.zeros((2,), "int32")}, "Received: prompts with shape \\(2,\\)"),
        ({"prompts": np.zeros((2, 1), "float32")}, "dtype float32"),
        ({"steps": 0}, "Received: steps=0"),
        ({"temperature": 0.0}, "Received: temperature=0.0"),
    ],
)
def test_bad_arguments(kwargs, match):
    arguments = {"prompts": np.zeros((2, 1), "int32"), "steps": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        sample_continuations(Counter(), **arguments)
