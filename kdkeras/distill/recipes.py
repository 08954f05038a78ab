"""Distillation recipes: named, data-driven settings for `kdkeras distill`.

`RECIPES` maps a name to a plain `dict` of settings (JSON-friendly, so that
`results.json` records exactly what ran); `build(name, teacher, student,
...)` turns one into a compiled-ready `Distiller`, the `compile` keyword
arguments and the callbacks. Changing a recipe is changing its `dict`.

Settings of a recipe:

- `terms`: a list of distillation terms, each a `dict` with `term`
  (`"logits"`, `"dkd"`, `"dist"` or `"feature"`), `weight`, and the term's
  own arguments (`temperature`, `alpha`, `beta`, ...). A `"feature"` term
  pairs `pairs` layers of teacher and student with
  `kdkeras.propose_layer_pairs` (deepest first) and compares them with
  FitNets hints through an automatic adapter.
- `student_loss_weight`: the ground-truth weight of the `Distiller`.
- `optimizer`: `{"name": ..., "learning_rate": ...}` (a Keras optimizer name).
- `schedule`: `None` (constant learning rate), `"cosine"` (decays to 0
  over `epochs * steps_per_epoch` steps) or `"cosine_warmup"` (rises
  linearly from 0 over the first 5% of the steps, then decays to 0).
- `cache_teacher`: whether the teacher's outputs may be computed once for
  the whole run (`Distiller.cache_teacher_outputs`): true for output terms
  on fixed inputs, false when feature maps would not fit in memory or the
  batches change every epoch.
- `distiller`: further keyword arguments of `kdkeras.Distiller`, as they are.
"""

import copy

import keras

from kdkeras.distill.distiller import Distiller
from kdkeras.distill.layer_pairs import propose_layer_pairs
from kdkeras.losses import DIST
from kdkeras.losses import DKD
from kdkeras.losses import FeatureDistillation
from kdkeras.losses import LogitsDistillation

__all__ = ["RECIPES", "build", "make_optimizer", "settings"]

_ADAM = {"name": "adam", "learning_rate": 1e-3}

RECIPES = {
    # Hinton et al. 2015: KL of temperature-softened outputs, times T^2.
    "kd": {
        "terms": [{"term": "logits", "temperature": 4.0, "weight": 1.0}],
        "student_loss_weight": 0.5,
        "optimizer": dict(_ADAM),
        "schedule": None,
        "cache_teacher": True,
        "distiller": {},
    },
    # Zhao et al. 2022, the paper's CIFAR-100 settings.
    "dkd": {
        "terms": [{"term": "dkd", "alpha": 1.0, "beta": 8.0, "temperature": 4.0, "weight": 1.0}],
        "student_loss_weight": 0.5,
        "optimizer": dict(_ADAM),
        "schedule": None,
        "cache_teacher": True,
        "distiller": {},
    },
    # Huang et al. 2022, the class's defaults (beta = gamma = 1, T = 1).
    "dist": {
        "terms": [{"term": "dist", "beta": 1.0, "gamma": 1.0, "temperature": 1.0, "weight": 1.0}],
        "student_loss_weight": 0.5,
        "optimizer": dict(_ADAM),
        "schedule": None,
        "cache_teacher": True,
        "distiller": {},
    },
    # Logits KD plus a FitNets hint (weight 100, as in recipes/feature_kd.py)
    # on the deepest proposed layer pair. Feature maps are not cached.
    "feature": {
        "terms": [
            {"term": "logits", "temperature": 4.0, "weight": 1.0},
            {"term": "feature", "pairs": 1, "weight": 100.0},
        ],
        "student_loss_weight": 0.5,
        "optimizer": dict(_ADAM),
        "schedule": None,
        "cache_teacher": False,
        "distiller": {},
    },
}
# Set by the results study (benchmarks/accuracy.py): on a validation split
# of MNIST-5k, T=8 with student_loss_weight=0.5 on cached teacher outputs
# beat T=2 and T=4 and weights 0 and 0.5 on average over the students, and
# teacher-student views with mixup did not help on fully labelled data (see
# recipes/README.md for the sweep and the test-set table).
RECIPES["recommended"] = {
    "terms": [{"term": "logits", "temperature": 8.0, "weight": 1.0}],
    "student_loss_weight": 0.5,
    "optimizer": {"name": "adam", "learning_rate": 2e-3, "clipnorm": 1.0},
    "schedule": "cosine_warmup",
    "cache_teacher": True,
    "distiller": {},
}


def settings(name):
    """A copy of the settings of recipe `name` (see the module docstring)."""
    if name not in RECIPES:
        raise ValueError(f"Expected a recipe in {sorted(RECIPES)}. Received: recipe={name!r}")
    return copy.deepcopy(RECIPES[name])


def _terms(specs, teacher, student, verbose):
    terms, weights = [], []
    for spec in specs:
        spec = dict(spec)
        kind, weight = spec.pop("term"), spec.pop("weight", 1.0)
        if kind == "logits":
            terms.append(LogitsDistillation(**spec))
        elif kind == "dkd":
            terms.append(DKD(**spec))
        elif kind == "dist":
            terms.append(DIST(**spec))
        elif kind == "feature":
            n = spec.pop("pairs", 1)
            pairs = propose_layer_pairs(teacher, student, n=n, verbose=verbose)
            if not pairs:
                raise ValueError(
                    "Expected teacher and student layers with image or vector "
                    "features to pair for the feature recipe. Received: teacher "
                    f"{teacher.name!r} and student {student.name!r} with none; use "
                    "another recipe (kd, dkd, dist)"
                )
            for t_name, s_name in pairs[::-1][:n]:
                terms.append(
                    FeatureDistillation(
                        teacher_layer_name=t_name, student_layer_name=s_name, **spec
                    )
                )
                weights.append(weight)
            continue
        else:
            raise ValueError(
                "Expected each term of a recipe to be 'logits', 'dkd', 'dist' or "
                f"'feature'. Received: term={kind!r}"
            )
        weights.append(weight)
    return terms, weights


def make_optimizer(name, *, epochs, steps_per_epoch):
    """A fresh optimizer with recipe `name`'s settings and learning-rate schedule.

    Also for the labels-only baseline of a fair comparison: the same
    optimizer and schedule as the distilled student.
    """
    recipe = settings(name)
    options = dict(recipe["optimizer"])
    learning_rate = options.pop("learning_rate")
    steps = max(1, epochs * steps_per_epoch)
    if recipe["schedule"] == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    elif recipe["schedule"] == "cosine_warmup":
        warmup = max(1, steps // 20)
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.0,
            decay_steps=max(1, steps - warmup),
            warmup_target=learning_rate,
            warmup_steps=warmup,
        )
    elif recipe["schedule"] is not None:
        raise ValueError(
            "Expected schedule None, 'cosine' or 'cosine_warmup'. "
            f"Received: schedule={recipe['schedule']!r}"
        )
    optimizer = keras.optimizers.get(
        {"class_name": options.pop("name"), "config": {"learning_rate": learning_rate, **options}}
    )
    return optimizer


def build(name, teacher, student, *, num_classes, epochs, steps_per_epoch, verbose=True):
    """Builds the `Distiller` of recipe `name`, with its `compile` arguments and callbacks.

    Args:
        name: a key of `RECIPES`.
        teacher: the trained teacher, a `keras.Model` outputting logits.
        student: the student, a `keras.Model` with the same output shape.
        num_classes: the number of classes (the teacher's last output axis).
        epochs: the number of training epochs (for schedules).
        steps_per_epoch: training steps per epoch (for schedules).
        verbose: print what is chosen automatically (feature pairs,
            adapters). Defaults to `True`.

    Returns:
        `(distiller, compile_kwargs, callbacks)`: call
        `distiller.compile(**compile_kwargs)`, then `fit(...,
        callbacks=callbacks + yours)`.

    Raises:
        ValueError: an unknown recipe, or a teacher whose outputs are not
            `(batch, num_classes)` logits.

    Example:

    ```python
    distiller, compile_kwargs, callbacks = kdkeras.distill.recipes.build(
        "kd", teacher, student, num_classes=10, epochs=20, steps_per_epoch=63)
    distiller.compile(**compile_kwargs)
    distiller.fit(x, y, epochs=20, callbacks=callbacks)
    ```
    """
    recipe = settings(name)
    shape = tuple(teacher.outputs[0].shape) if getattr(teacher, "outputs", None) else None
    if shape is not None and (len(shape) != 2 or shape[-1] != num_classes):
        raise ValueError(
            f"Expected a teacher with one output of shape (batch, {num_classes}): "
            f"logits over the classes. Received: teacher output shape {shape}"
        )
    terms, weights = _terms(recipe["terms"], teacher, student, verbose)
    distiller = Distiller(
        teacher,
        student,
        terms,
        distillation_loss_weights=weights,
        student_loss_weight=recipe["student_loss_weight"],
        **recipe["distiller"],
    )
    optimizer = make_optimizer(name, epochs=epochs, steps_per_epoch=steps_per_epoch)
    compile_kwargs = {
        "optimizer": optimizer,
        "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "metrics": ["accuracy"],
    }
    return distiller, compile_kwargs, []
