"""On-policy distillation data: the student writes, the teacher scores, prompts are masked.

Distilling on fixed text trains the student on prefixes it would never
produce itself; at generation time its own mistakes lead it off that
distribution (exposure bias). GKD and MiniLLM train on sequences the student
samples: `sample_continuations` extends prompts with the student's samples
and returns the mask of the generated positions, so that

```python
tokens, mask = kdkeras.distill.sample_continuations(student, prompts, steps=32, seed=0)
distiller.fit(tokens[:, :-1], sample_weight=mask, epochs=1)
```

scores every generated token with the teacher through a token term
(`TokenDistillation`, `GeneralizedJSD`, `SkewKL`) while the prompt's
tokens weigh nothing (labels are not needed: the unlabeled weights reach
the terms). Repeat both lines to stay on-policy as the student changes;
mixing in batches of fixed text gives GKD's `lambda` < 1.

The sampler runs the model on the whole prefix at each step (no key/value
cache): simple and exact for any causal Keras model, quadratic in length.

Reference:
    Agarwal et al. On-Policy Distillation of Language Models: Learning from
    Self-Generated Mistakes. ICLR 2024. https://arxiv.org/abs/2306.13649
    Gu et al. MiniLLM: Knowledge Distillation of Large Language Models.
    ICLR 2024. https://arxiv.org/abs/2306.08543
"""

import numpy as np

from kdkeras.losses import is_finite_number

__all__ = ["sample_continuations"]


def sample_continuations(model, prompts, steps, temperature=1.0, seed=None, batch_size=64):
    """Extends `prompts` with `steps` tokens sampled from a causal language model.

    Args:
        model: a Keras model mapping `(batch, length)` token ids to
            `(batch, length, vocab)` next-token logits, causal (position `i`
            sees tokens up to `i`), accepting the lengths used here.
        prompts: `(batch, prompt_length)` integer token ids, `prompt_length
            >= 1`.
        steps: how many tokens to sample after each prompt, `>= 1`.
        temperature: sampling temperature `> 0`; the model's distribution
            at 1. Defaults to 1.0.
        seed: an integer seed for repeatable samples. Defaults to `None`.
        batch_size: prompts run through the model at once. Defaults to 64.

    Returns:
        `(tokens, mask)`: `tokens`, int32 `(batch, prompt_length + steps)`,
        the prompts followed by the samples; `mask`, float32
        `(batch, prompt_length + steps - 1)`, 1 where the *next* token was
        sampled (the positions whose targets the student wrote) and 0 over
        the prompt. Train on `tokens[:, :-1]` with `sample_weight=mask`.

    Raises:
        ValueError: for prompts that are not a non-empty 2-D integer array,
            `steps < 1` or `temperature <= 0`.
    """
    prompts = np.asarray(prompts)
    if prompts.ndim != 2 or prompts.shape[1] < 1 or not np.issubdtype(prompts.dtype, np.integer):
        raise ValueError(
            "Expected `prompts` as integer token ids of shape (batch, prompt_length >= 1). "
            f"Received: prompts with shape {prompts.shape} and dtype {prompts.dtype}"
        )
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"Expected `steps` to be an integer >= 1. Received: steps={steps!r}")
    if not is_finite_number(temperature) or temperature <= 0:
        raise ValueError(
            f"Expected `temperature` to be a finite number > 0. Received: temperature={temperature!r}"
        )
    rng = np.random.default_rng(seed)
    tokens = prompts.astype("int32")
    for _ in range(steps):
        logits = np.concatenate(
            [
                np.asarray(model(tokens[i : i + batch_size], training=False))[:, -1]
                for i in range(0, len(tokens), batch_size)
            ]
        ).astype("float64")
        z = logits / temperature
        z -= z.max(axis=-1, keepdims=True)
        probs = np.exp(z)
        probs /= probs.sum(axis=-1, keepdims=True)
        # Inverse-CDF sampling: one uniform draw per sequence.
        draws = rng.random((len(probs), 1))
        nxt = np.minimum((probs.cumsum(axis=-1) < draws).sum(axis=-1), probs.shape[-1] - 1)
        tokens = np.concatenate([tokens, nxt[:, None].astype("int32")], axis=1)
    prompt_length = prompts.shape[1]
    mask = np.zeros((len(tokens), tokens.shape[1] - 1), "float32")
    mask[:, prompt_length - 1 :] = 1.0
    return tokens, mask
