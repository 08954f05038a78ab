"""The `Distiller`'s constructor arguments: checked, saved, restored.

`check_arguments` validates them when a `Distiller` is built (each error
says what was expected and what was received); `distiller_config` and
`distiller_arguments` are its `get_config` and `from_config`.
"""

import keras

from kdkeras.losses import DistillationLoss
from kdkeras.losses import WrongTypeError
from kdkeras.losses import is_finite_number

__all__ = ["check_arguments", "distiller_arguments", "distiller_config"]

try:  # keras >= 3.12
    from keras.distillation import DistillationLoss as _AnyDistillationLoss
except ImportError:  # pragma: no cover - guarded by the keras>=3.12 pin
    _AnyDistillationLoss = DistillationLoss


def check_arguments(
    teacher,
    student,
    distillation_losses,
    distillation_loss_weights,
    student_loss_weight,
    teacher_weights,
):
    """Validates the models, terms and weights of a `Distiller`.

    Returns:
        `(teachers, losses, weights)`: the teachers, the terms and one
        weight per term, each as a list.

    Raises:
        ValueError: a value out of range, a missing or doubled model, a
            count that does not match; `WrongTypeError` (a `TypeError` that
            is also a `ValueError`) for a teacher or student that is no
            `keras.Model`.
        TypeError: a term that is no `DistillationLoss`.
    """
    teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
    if not teachers:
        raise ValueError("Expected at least one teacher. Received: teacher=[]")
    for i, t in enumerate(teachers):
        if not isinstance(t, keras.Model):
            where = f"teacher[{i}]" if len(teachers) > 1 else "teacher"
            raise WrongTypeError(f"Expected `{where}` to be a keras.Model. Received: {where}={t!r}")
    if not isinstance(student, keras.Model):
        raise WrongTypeError(
            f"Expected `student` to be a keras.Model. Received: student={student!r}"
        )
    if any(t is student for t in teachers):
        raise ValueError(
            "Expected different objects for `teacher` and `student`: the "
            "teacher is frozen. Clone the model for self-distillation "
            "(keras.models.clone_model). Received the same model twice."
        )

    losses = distillation_losses
    if losses is None:
        raise ValueError(
            "Expected a distillation term or a list of terms, such as "
            "kdkeras.LogitsDistillation(). Received: distillation_losses=None"
        )
    losses = list(losses) if isinstance(losses, (list, tuple)) else [losses]
    if not losses:
        raise ValueError(
            "Expected at least one distillation term. Received: distillation_losses=[]"
        )
    for i, term in enumerate(losses):
        if not isinstance(term, _AnyDistillationLoss):
            raise TypeError(
                "Expected each distillation term to be a "
                "kdkeras.losses.DistillationLoss or a "
                "keras.distillation.DistillationLoss. "
                f"Received: distillation_losses[{i}]={term!r}"
            )

    if distillation_loss_weights is None:
        weights = [1.0] * len(losses)
    else:
        weights = (
            list(distillation_loss_weights)
            if isinstance(distillation_loss_weights, (list, tuple))
            else [distillation_loss_weights]
        )
    if len(weights) != len(losses):
        raise ValueError(
            "Expected one weight per distillation term "
            f"({len(losses)}). Received: "
            f"distillation_loss_weights={distillation_loss_weights!r}"
        )
    for w in weights:
        if not is_finite_number(w) or w < 0:
            raise ValueError(
                "Expected every distillation loss weight to be a finite "
                "number >= 0. Received: "
                f"distillation_loss_weights={distillation_loss_weights!r}"
            )
    if not is_finite_number(student_loss_weight) or not 0 <= student_loss_weight <= 1:
        raise ValueError(
            "Expected `student_loss_weight` to be a number in [0, 1]. "
            f"Received: student_loss_weight={student_loss_weight!r}"
        )
    if teacher_weights is not None:
        tw = list(teacher_weights) if isinstance(teacher_weights, (list, tuple)) else None
        if (
            tw is None
            or len(tw) != len(teachers)
            or not all(is_finite_number(w) and w >= 0 for w in tw)
            or sum(tw) <= 0
        ):
            raise ValueError(
                f"Expected `teacher_weights` to be {len(teachers)} finite "
                "numbers >= 0 with a positive sum, one per teacher. "
                f"Received: teacher_weights={teacher_weights!r}"
            )

    return teachers, losses, weights


def _augment_config(augment):
    if augment is None:
        return None
    if isinstance(augment, keras.layers.Layer):
        return keras.saving.serialize_keras_object(augment)
    raise ValueError(
        "Expected `augment` to be a Keras layer to save the Distiller's "
        "config: a plain callable cannot be serialized. Save "
        "`distiller.student` instead, or pass a layer. Received: "
        f"augment={augment!r}"
    )


def distiller_config(distiller):
    """`Distiller.get_config`: its constructor arguments, models serialized."""
    serialize = keras.saving.serialize_keras_object
    teacher = (
        [serialize(t) for t in distiller.teacher]
        if isinstance(distiller.teacher, (list, tuple))
        else serialize(distiller.teacher)
    )
    return {
        "name": distiller.name,
        "trainable": distiller.trainable,
        "teacher": teacher,
        "student": serialize(distiller.student),
        "distillation_losses": [serialize(t) for t in distiller.distillation_losses],
        "distillation_loss_weights": list(distiller.distillation_loss_weights),
        "student_loss_weight": distiller.student_loss_weight,
        "teacher_weights": (
            None if distiller.teacher_weights is None else list(distiller.teacher_weights)
        ),
        "augment": _augment_config(distiller.augment),
        "mixup": distiller.mixup,
        "seed": distiller.seed,
    }


def distiller_arguments(config, custom_objects=None):
    """The keyword arguments of `Distiller(...)` from `distiller_config`."""
    config = dict(config)
    deserialize = lambda c: keras.saving.deserialize_keras_object(c, custom_objects=custom_objects)
    teacher = config.pop("teacher")
    config["teacher"] = (
        [deserialize(t) for t in teacher] if isinstance(teacher, list) else deserialize(teacher)
    )
    config["student"] = deserialize(config.pop("student"))
    config["distillation_losses"] = [deserialize(t) for t in config.pop("distillation_losses")]
    if config.get("augment") is not None:
        config["augment"] = deserialize(config["augment"])
    return config
