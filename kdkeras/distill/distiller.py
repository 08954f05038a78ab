"""The `Distiller`: a `keras.Model` that trains a student from a frozen teacher."""

import keras
from keras import ops

from kdkeras.distill import adapters as adapters_lib
from kdkeras.distill import arguments as arguments_lib
from kdkeras.distill import data_checks
from kdkeras.distill import indices as indices_lib
from kdkeras.distill import multiworker
from kdkeras.distill import sequences
from kdkeras.distill import taps
from kdkeras.distill import teacher_cache as cache_lib
from kdkeras.distill import terms as terms_lib
from kdkeras.distill import trackers
from kdkeras.distill import views as views_lib
from kdkeras.losses import TOP_K_IDS
from kdkeras.losses import DistillationLoss
from kdkeras.losses import TokenDistillationLoss
from kdkeras.losses import check_vocab_sizes
from kdkeras.losses import ensemble_logits
from kdkeras.losses import is_finite_number
from kdkeras.losses import is_top_k
from kdkeras.losses import reduce_per_sample
from kdkeras.losses import reduce_per_token
from kdkeras.losses import token_count
from kdkeras.losses import top_k_targets
from kdkeras.utils import keras_compat

__all__ = ["Distiller"]


def _needs_global_batch(term):
    return isinstance(term, DistillationLoss) and term.needs_global_batch


def _snake(name):
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


# Logged by every Distiller; a term named like one of these gets a suffix.
_OWN_LOG_NAMES = ("loss", "total_loss", "student_loss", "distillation_loss", "teacher_agreement")


@keras.saving.register_keras_serializable(package="kdkeras")
class Distiller(keras.Model):
    """Trains a student model from a frozen teacher: knowledge distillation.

    A `keras.Model` with the vocabulary of `keras.distillation.Distiller`:
    compile it and call `fit`, `evaluate` and `predict` as usual; `call()`
    returns the student's output. Each training step:

    1. runs the teacher once, with `training=False` and outside the gradient
       tape, for its outputs and tapped features (or takes them from a cache,
       see `cache_teacher_outputs`);
    2. runs the student exactly once, recording its outputs and tapped
       features from that same pass;
    3. forms `student_loss_weight * ground_truth + (1 - student_loss_weight)
       * sum_i(weight_i * term_i)`, every part weighted by `sample_weight`
       and scaled so that replicas of a `tf.distribute` strategy add up to
       the single-device value; unlabeled batches (`x` only) train on the
       distillation terms alone;
    4. updates the student's variables only (and those of adapters).

    Logs carry `loss`, `student_loss` (the ground-truth term), one entry per
    distillation term (for example `logits_distillation_loss`),
    `teacher_agreement` (share of samples whose argmax equals the teacher's)
    and the compiled metrics; and, under `keras.distillation`'s names,
    `total_loss` (equal to `loss`) and `distillation_loss`
    (`sum_i(weight_i * term_i)`, so that `loss = student_loss_weight *
    student_loss + (1 - student_loss_weight) * distillation_loss`, plus
    regularization losses). `evaluate()` runs both models in inference
    mode, so it updates no BatchNorm statistic.

    The teacher is frozen: `teacher.trainable` is set to `False`, and its
    weights are never updated.

    Args:
        teacher: a trained `keras.Model`, or a list of them: their soft
            targets are averaged (see `teacher_weights`) for every output
            term, at that term's temperature.
        student: the `keras.Model` to train.
        distillation_losses: a distillation term or a list of terms:
            `kdkeras.LogitsDistillation`, `kdkeras.FeatureDistillation`, ...,
            or objects written for `keras.distillation` (subclasses of
            `keras.distillation.DistillationLoss`; those cannot see sample
            weights).
        distillation_loss_weights: one non-negative weight per term.
            Defaults to 1.0 for each.
        student_loss_weight: weight in `[0, 1]` of the ground-truth loss given
            to `compile(loss=...)`; the terms get `1 - student_loss_weight`.
            Defaults to 0.5.
        teacher_weights: with several teachers, one non-negative weight per
            teacher for averaging their soft targets. Defaults to equal.
        augment: a Keras layer or model (for example a `keras.Sequential` of
            `RandomTranslation`, `RandomRotation`, `RandomZoom`,
            `RandomFlip`), or a callable `x -> x`, applied to every training
            batch once, inside the training step, before the teacher and the
            student run: both see the same view. Training only; `evaluate`
            and `predict` see the inputs as they are. Defaults to `None`.
        mixup: `alpha` of mixup: each training batch is mixed with a
            permutation of itself after augmentation, `lam ~ Beta(alpha,
            alpha)` per batch; the teacher scores the mixed inputs, the
            ground-truth loss becomes `lam * loss(y) + (1 - lam) *
            loss(y[perm])` and sample weights mix like the inputs. Defaults
            to `None` (no mixup).
        seed: seed of the mixup draws. Defaults to `None` (Keras's global
            seed: `keras.utils.set_random_seed` makes runs repeatable).
            Augmentation layers take their own `seed=`.
        name: the model's name. Defaults to `"distiller"`.
        **kwargs: passed to `keras.Model`.

    Example:

    ```python
    distiller = kdkeras.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=kdkeras.LogitsDistillation(temperature=4.0),
        student_loss_weight=0.1,
    )
    distiller.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    distiller.fit(x_train, y_train, epochs=10)
    distiller.student.save("student.keras")
    ```

    Reference:
        Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network.
        https://arxiv.org/abs/1503.02531
    """

    def __init__(
        self,
        teacher,
        student,
        distillation_losses,
        distillation_loss_weights=None,
        student_loss_weight=0.5,
        teacher_weights=None,
        augment=None,
        mixup=None,
        seed=None,
        name="distiller",
        **kwargs,
    ):
        if keras.backend.backend() != "tensorflow":
            raise RuntimeError(
                "kdkeras.Distiller needs the TensorFlow backend. Set "
                "KERAS_BACKEND=tensorflow before importing keras. "
                f"Received: backend={keras.backend.backend()!r}"
            )
        super().__init__(name=name, **kwargs)
        teachers, losses, weights = arguments_lib.check_arguments(
            teacher,
            student,
            distillation_losses,
            distillation_loss_weights,
            student_loss_weight,
            teacher_weights,
        )

        self.teacher = teacher
        self.student = student
        self.distillation_losses = losses
        self.distillation_loss_weights = weights
        self.student_loss_weight = student_loss_weight
        self.teacher_weights = teacher_weights
        self.augment = augment
        self.mixup = mixup
        self.seed = seed
        self._views = views_lib.Views(augment, mixup, seed)
        self._teachers = teachers
        for t in teachers:
            t.trainable = False
        # fit() fails under MultiWorkerMirroredStrategy (keras-team/keras#20585).
        multiworker.enable_for_current_strategy()

        self._resolve_taps()
        self._check_output_shapes()
        # One adapter (or None) per term, mapping the student's tapped
        # features to the teacher's shape; trained with the student.
        self.adapters = adapters_lib.build_adapters(
            self.distillation_losses,
            self._teachers[0],
            self.student,
            self._teacher_taps,
            self._student_taps,
        )
        # Terms with heads or state (CRD) build them now, inside the
        # strategy scope. Like adapters, their layers train with the
        # student and are saved with the Distiller, never with the student.
        self.term_layers = terms_lib.build_terms(
            self.distillation_losses,
            self._teachers[0],
            self.student,
            self._teacher_taps,
            self._student_taps,
            self.adapters,
        )
        self._term_options = [
            terms_lib.call_options(term, j) for j, term in enumerate(self.distillation_losses)
        ]

        # Term names that would clash with the Distiller's own logs, or with
        # each other, get a numbered suffix.
        names, seen = [], {name: 1 for name in _OWN_LOG_NAMES}
        for term in losses:
            base = getattr(term, "name", None) or f"{_snake(type(term).__name__)}_loss"
            count = seen.get(base, 0)
            seen[base] = count + 1
            names.append(base if count == 0 else f"{base}_{count}")
        self.term_names = names
        # keras.distillation's names: total_loss (= loss) and
        # distillation_loss (sum_i weight_i * term_i); one metric for all.
        self._logs = trackers.LogMeans(
            ["total_loss", "student_loss", "distillation_loss", *names, "teacher_agreement"]
        )
        self._build_schedule_variables()
        if student.built and all(t.built for t in teachers):
            self.built = True

    # ------------------------------------------------------------ set-up

    def _build_schedule_variables(self):
        # The weights and temperatures the step reads are variables, not
        # Python floats baked into the traced function, so callbacks
        # (kdkeras.callbacks.Schedule, Warmup) can change them between epochs.
        def variable(value, name):
            return keras.Variable(
                float(value), dtype="float32", trainable=False, autocast=False, name=name
            )

        self._student_loss_weight_variable = variable(
            self.student_loss_weight, "student_loss_weight"
        )
        self._term_weight_variables = [
            variable(w, f"distillation_loss_weight_{j}")
            for j, w in enumerate(self.distillation_loss_weights)
        ]
        self._temperature_variables = [
            variable(term.temperature, f"temperature_{j}")
            if isinstance(term, DistillationLoss)
            and is_finite_number(getattr(term, "temperature", None))
            else None
            for j, term in enumerate(self.distillation_losses)
        ]

    @property
    def schedule_variables(self):
        """The values a schedule may change during training, as variables.

        A dict: `"student_loss_weight"` (one variable),
        `"distillation_loss_weights"` (one per term) and `"temperatures"`
        (one per term, `None` for terms without a temperature). Assign them
        between steps (`kdkeras.callbacks.Schedule` and `Warmup` do); the
        compiled step reads their current values. The constructor arguments
        keep the initial values (and `get_config` saves those).
        """
        return {
            "student_loss_weight": self._student_loss_weight_variable,
            "distillation_loss_weights": list(self._term_weight_variables),
            "temperatures": list(self._temperature_variables),
        }

    def _resolve_taps(self):
        """Finds every tapped layer now, so a wrong name fails before `fit`."""
        self._teacher_taps = []  # per term: layer or None (final output)
        self._student_taps = []
        for i, term in enumerate(self.distillation_losses):
            t_name = getattr(term, "teacher_layer_name", None)
            s_name = getattr(term, "student_layer_name", None)
            if t_name is not None and len(self._teachers) > 1:
                raise ValueError(
                    "Feature terms need a single teacher: with several teachers "
                    "it is ambiguous which one to tap. Received: "
                    f"{len(self._teachers)} teachers and distillation_losses[{i}] "
                    f"with teacher_layer_name={t_name!r}"
                )
            if t_name is None and len(self._teachers) > 1 and not hasattr(term, "temperature"):
                raise ValueError(
                    "With several teachers, output terms must be logit terms "
                    "(with a `temperature`, such as LogitsDistillation, DKD, DIST): "
                    "their soft targets are averaged at that temperature. Other "
                    "terms would compare against averaged log-probabilities. "
                    f"Received: distillation_losses[{i}]={type(term).__name__}"
                )
            if getattr(term, "standardize", False) is True and len(self._teachers) > 1:
                raise ValueError(
                    "Logit standardization needs a single teacher: the soft targets of "
                    "several teachers are averaged from their raw logits. Received: "
                    f"{len(self._teachers)} teachers and distillation_losses[{i}] with "
                    "standardize=True"
                )
            self._teacher_taps.append(
                None if t_name is None else taps.find_layer(self._teachers[0], t_name, "teacher")
            )
            self._student_taps.append(
                None if s_name is None else taps.find_layer(self.student, s_name, "student")
            )

    def _is_output_term(self, j):
        return self._teacher_taps[j] is None and self._student_taps[j] is None

    def _check_output_shapes(self):
        """Output terms need teacher and student outputs of the same shape.

        Token terms compare vocabularies themselves (`check_vocab_sizes`):
        with token terms only, the last axis may differ by a padded tail.
        """
        output_terms = [
            term for j, term in enumerate(self.distillation_losses) if self._teacher_taps[j] is None
        ]
        if not output_terms:
            return
        tokens_only = all(isinstance(term, TokenDistillationLoss) for term in output_terms)
        s_out = getattr(self.student, "outputs", None)
        for t in self._teachers:
            t_out = getattr(t, "outputs", None)
            if not s_out or not t_out:
                continue  # subclassed models: checked on the first batch
            t_shapes = [tuple(o.shape) for o in t_out]
            s_shapes = [tuple(o.shape) for o in s_out]
            if tokens_only and len(t_shapes) == len(s_shapes) == 1:
                for term in output_terms:
                    check_vocab_sizes(t_shapes[0][-1], s_shapes[0][-1], term.vocab_size)
                t_shapes = [shape[:-1] for shape in t_shapes]
                s_shapes = [shape[:-1] for shape in s_shapes]
            compatible = len(t_shapes) == len(s_shapes) and all(
                len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))
                for a, b in zip(t_shapes, s_shapes)
            )
            if not compatible:
                raise ValueError(
                    "Expected the teacher and the student to have outputs of the "
                    "same shape for output distillation terms. Received: teacher "
                    f"{t.name!r} outputs {t_shapes}, student {self.student.name!r} "
                    f"outputs {s_shapes}"
                )

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, after checking array data (`kdkeras.distill.data_checks`).

        Empty data, NaN/Inf in inputs or cached teacher outputs and labels
        outside the student's classes raise a `ValueError` before training;
        a loss that turns NaN/Inf later stops training with an error naming
        the step (`kdkeras.callbacks.TerminateOnNonFinite`).

        When a term needs dataset indices (`CRD`), NumPy inputs `x` get
        them here (`kdkeras.distill.with_indices`: `0 .. n - 1`, shuffled
        with their samples); a `tf.data.Dataset` must carry them, and one
        that does not is refused before training.

        `fit(x, sample_weight=w)` without labels trains the distillation
        terms with the weights `w` (a padding mask, for example): Keras
        drops `sample_weight` when `y` is `None`, so the weights are packed
        with the inputs (and shuffled with them). The same holds for
        `validation_data=(x, None, w)`. A `tf.data.Dataset` may yield
        `(x, None, w)` directly.
        """
        import inspect

        args, kwargs = sequences.pack_unlabeled_weights(super().fit, args, kwargs, validation=True)
        bound = inspect.signature(super().fit).bind(*args, **kwargs)
        if "x" in bound.arguments:
            bound.arguments["x"] = indices_lib.index_fit_inputs(
                bound.arguments["x"], self.distillation_losses
            )
        return data_checks.fit_with_checks(super().fit, self, *bound.args, **bound.kwargs)

    def evaluate(self, *args, **kwargs):
        """`keras.Model.evaluate`; `evaluate(x, sample_weight=w)` without labels honours `w`."""
        args, kwargs = sequences.pack_unlabeled_weights(super().evaluate, args, kwargs)
        return super().evaluate(*args, **kwargs)

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """Configures training, with the signature of `keras.Model.compile`.

        `loss` is the ground-truth loss of the student (for example
        `SparseCategoricalCrossentropy(from_logits=True)`); it is required
        unless `student_loss_weight` is 0.
        """
        if loss is None and self.student_loss_weight > 0:
            raise ValueError(
                "Expected `loss` (the student's ground-truth loss) because "
                f"student_loss_weight={self.student_loss_weight} > 0. Pass "
                "compile(loss=...), or build the Distiller with "
                "student_loss_weight=0.0 to train on the teacher alone. "
                "Received: loss=None"
            )
        if kwargs.get("jit_compile") is True and isinstance(self.augment, keras.layers.Layer):
            blocking = [
                layer.name
                for layer in [self.augment, *keras_compat.flatten_layers(self.augment)]
                if getattr(layer, "supports_jit", True) is False
            ]
            if blocking:
                raise ValueError(
                    "Expected an `augment` that XLA can compile with jit_compile=True: "
                    f"the layers {blocking} run TensorFlow ops XLA does not support "
                    "(image transforms), and Keras would silently compile nothing. "
                    "Compile with jit_compile=False (or the default 'auto'), or "
                    "use XLA-compatible augmentation. Received: jit_compile=True"
                )
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        """Recompiles a loaded Distiller (its `compile` is overridden)."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------------- forward

    def call(self, inputs, training=None):
        inputs = indices_lib.unpack(inputs)[0]
        return self.student(cache_lib.unpack_inputs(inputs), training=training)

    def _teacher_targets(self, x):
        """Teacher outputs (one per teacher) and tapped features (per term)."""
        outputs, features = [], {}
        for i, teacher in enumerate(self._teachers):
            layers = [layer for layer in self._teacher_taps if layer is not None] if i == 0 else []
            with taps.capture(layers) as store:
                out = teacher(x, training=False)
            outputs.append(out)
            if i == 0:
                for j, layer in enumerate(self._teacher_taps):
                    if layer is not None:
                        features[str(j)] = store[id(layer)]
        stop = lambda v: ops.stop_gradient(v)
        # A tuple, not a list: tf.data would turn a list into one tensor.
        return {
            "outputs": keras.tree.map_structure(stop, tuple(outputs)),
            "features": keras.tree.map_structure(stop, features),
        }

    def compute_teacher_outputs(self, x, top_k=None, vocab_size=None):
        """Everything the terms need from the teacher for a batch `x`.

        Used by `cache_teacher_outputs`; the structure is internal. With
        `top_k`, each output becomes top-k targets (`top_k_targets`, over
        the first `vocab_size` entries when given).
        """
        targets = self._teacher_targets(x)
        if top_k is not None:
            outputs = tuple(top_k_targets(o, top_k, vocab_size) for o in targets["outputs"])
            targets = {**targets, "outputs": outputs}
        return targets

    def _teacher_weight_list(self):
        return None if self.teacher_weights is None else list(self.teacher_weights)

    def _student_forward(self, x, training):
        layers = [layer for layer in self._student_taps if layer is not None]
        with taps.capture(layers) as store:
            y_pred = self.student(x, training=training)
        features = {
            j: store[id(layer)] for j, layer in enumerate(self._student_taps) if layer is not None
        }
        return y_pred, features

    def _term_inputs(self, j, term, targets, y_pred, s_features):
        if self._teacher_taps[j] is not None:
            t_value = targets["features"][str(j)]
        elif len(self._teachers) == 1:
            t_value = targets["outputs"][0]
        else:
            # Logit terms only (checked in _resolve_taps), at the scheduled temperature.
            temperature = ops.convert_to_tensor(self._temperature_variables[j])
            t_value = keras.tree.map_structure(
                lambda *outs: ensemble_logits(list(outs), self._teacher_weight_list(), temperature),
                *targets["outputs"],
            )
        s_value = s_features[j] if self._student_taps[j] is not None else y_pred
        adapter = self.adapters[j]
        if adapter is not None:
            s_value = adapter(s_value)
        return t_value, s_value

    def _ground_truth(self, y, y_pred, sample_weight, mixing):
        compiled_loss = keras_compat.compiled_loss(self)
        if y is None or compiled_loss is None:
            return None
        if mixing is None:
            return ops.cast(compiled_loss(y, y_pred, sample_weight), "float32")
        # Mixed inputs: lam * loss(y) + (1 - lam) * loss(y[perm]), each with
        # its own samples' weights (sample_weight here is still unmixed).
        lam, perm = mixing
        other_y = keras.tree.map_structure(lambda v: ops.take(v, perm, axis=0), y)
        other_w = None if sample_weight is None else ops.take(sample_weight, perm, axis=0)
        first = ops.cast(compiled_loss(y, y_pred, sample_weight), "float32")
        second = ops.cast(compiled_loss(other_y, y_pred, other_w), "float32")
        return lam * first + (1.0 - lam) * second

    def _objective(
        self,
        x,
        y,
        sample_weight,
        targets,
        y_pred,
        s_features,
        mixing=None,
        indices=None,
        training=False,
    ):
        """Returns `(total, ground_truth, distill, [term values])`, replica-scaled.

        `distill` is `sum_i(weight_i * term_i)`, before the factor
        `1 - student_loss_weight`. With mixup, `sample_weight` is the
        unmixed one and `mixing` the `(lam, perm)` of the batch. `indices`
        (dataset indices) and `training` reach the terms that take them.
        """
        ground_truth = self._ground_truth(y, y_pred, sample_weight, mixing)
        term_weight = sample_weight
        if mixing is not None and sample_weight is not None:
            term_weight = views_lib.mix(ops.cast(sample_weight, "float32"), *mixing)
        if y is None and self.student_loss_weight >= 1.0:
            raise ValueError(
                "Batches without labels leave nothing to train with "
                "student_loss_weight=1.0. Received: a batch with x only"
            )
        # Padding masks of the student's output (Embedding(mask_zero=True),
        # Masking) reach the output terms as Keras's own losses see them.
        keras_mask = (
            None if isinstance(y_pred, (list, tuple, dict)) else keras_compat.keras_mask(y_pred)
        )
        inputs = [
            self._term_inputs(j, term, targets, y_pred, s_features)
            for j, term in enumerate(self.distillation_losses)
        ]
        local = (y, term_weight, indices)
        # Batch-relational and stateful terms see the batch of every replica.
        wanted = [j for j, t in enumerate(self.distillation_losses) if _needs_global_batch(t)]
        if wanted:
            gathered, global_batch = terms_lib.gather_global_batch(
                ([inputs[j] for j in wanted], local)
            )
            for j, pair in zip(wanted, gathered):
                inputs[j] = pair
        terms = []
        for j, term in enumerate(self.distillation_losses):
            t_value, s_value = inputs[j]
            y_j, weight_j, indices_j = global_batch if j in wanted else local
            value = terms_lib.term_value(
                term,
                t_value,
                s_value,
                y_j,
                weight_j,
                temperature=self._temperature_variables[j],
                indices=indices_j,
                training=training,
                options=self._term_options[j],
                position=j,
                keras_mask=keras_mask if self._is_output_term(j) else None,
            )
            terms.append(terms_lib.scale_for_replicas(value))
        student_loss_weight = ops.convert_to_tensor(self._student_loss_weight_variable)
        total = ops.zeros((), "float32")
        if ground_truth is not None:
            total = total + student_loss_weight * ground_truth
        distill = sum(
            ops.convert_to_tensor(w) * v for w, v in zip(self._term_weight_variables, terms)
        )
        total = total + (1.0 - student_loss_weight) * distill
        owners = [self.student, *(a for a in self.adapters if a is not None), *self.term_layers]
        regularization = [ops.sum(ops.cast(l, "float32")) for owner in owners for l in owner.losses]
        if regularization:
            total = total + terms_lib.scale_for_replicas(ops.sum(regularization))
        return total, ground_truth, distill, terms

    def _agreement(self, targets, y_pred, sample_weight):
        outs = targets["outputs"]
        if isinstance(y_pred, (list, tuple, dict)):
            return None
        if len(y_pred.shape) < 2 or y_pred.shape[-1] in (None, 1):
            return None
        if len(outs) == 1 and is_top_k(outs[0]):
            teacher_argmax = ops.take(outs[0][TOP_K_IDS], 0, axis=-1)
        elif any(isinstance(o, (list, tuple, dict)) for o in outs):
            return None
        else:
            teacher_out = (
                outs[0] if len(outs) == 1 else ensemble_logits(outs, self._teacher_weight_list())
            )
            teacher_argmax = ops.argmax(teacher_out, axis=-1)
        equal = ops.cast(
            ops.equal(
                ops.cast(teacher_argmax, "int32"), ops.cast(ops.argmax(y_pred, axis=-1), "int32")
            ),
            "float32",
        )
        keras_mask = keras_compat.keras_mask(y_pred)
        if keras_mask is not None and len(equal.shape) == len(keras_mask.shape):
            sample_weight = sequences.with_mask(sample_weight, keras_mask)
        if sample_weight is not None and len(equal.shape) > 1 and len(sample_weight.shape) > 1:
            # A per-step mask: the share of real tokens that agree.
            if sample_weight.shape[-1] not in (1, None):
                count = sequences.token_count_per_replica(token_count(equal, sample_weight))
                return reduce_per_token(equal, sample_weight, count)
        return reduce_per_sample(equal, sample_weight)

    def _update_trackers(self, x, total, ground_truth, distill, terms, agreement):
        import tensorflow as tf

        batch = tf.shape(keras.tree.flatten(x)[0])[0]
        total = terms_lib.unscale_for_replicas(total)
        keras_compat.loss_tracker(self).update_state(total, sample_weight=batch)
        unscale = terms_lib.unscale_for_replicas
        values = {"total_loss": total, "distillation_loss": unscale(distill)}
        if ground_truth is not None:
            values["student_loss"] = unscale(ground_truth)
        values.update({n: unscale(v) for n, v in zip(self.term_names, terms)})
        if agreement is not None:
            values["teacher_agreement"] = agreement
        self._logs.update_state(values, batch)

    def _step(self, data, training):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, indices = indices_lib.unpack(x)
        packed_weight = cache_lib.packed_sample_weight(x)
        x, cached = cache_lib.unpack(x)
        if packed_weight is not None:
            if sample_weight is not None:
                raise ValueError(
                    "Expected sample weights once: either packed with the inputs "
                    "or given as sample_weight. Received both"
                )
            sample_weight = packed_weight
        mixing = None
        if training and self._views.active:
            if cached is not None:
                raise ValueError(views_lib.CACHE_MESSAGE)
            # One view of the batch, drawn once, for both models.
            x, mixing, _ = self._views(x)
        targets = cached if cached is not None else self._teacher_targets(x)
        if training:
            import tensorflow as tf

            with tf.GradientTape() as tape:
                y_pred, s_features = self._student_forward(x, training=True)
                total, ground_truth, distill, terms = self._objective(
                    x, y, sample_weight, targets, y_pred, s_features, mixing, indices, True
                )
                scaled = self.optimizer.scale_loss(total)
            variables = self.trainable_variables
            gradients = tape.gradient(scaled, variables)
            self.optimizer.apply_gradients(zip(gradients, variables))
        else:
            y_pred, s_features = self._student_forward(x, training=False)
            total, ground_truth, distill, terms = self._objective(
                x, y, sample_weight, targets, y_pred, s_features, indices=indices
            )
        agreement = self._agreement(targets, y_pred, sample_weight)
        self._update_trackers(x, total, ground_truth, distill, terms, agreement)
        if y is not None:
            return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        # Unlabeled batches: leave out the metrics that need labels.
        logs = {"loss": keras_compat.loss_tracker(self).result(), **self._logs.result()}
        del logs["student_loss"]
        return logs

    def train_step(self, data):
        return self._step(data, training=True)

    def test_step(self, data):
        return self._step(data, training=False)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The student's ground-truth loss alone (used to build loss state).

        The full distillation loss needs the teacher's targets and is formed
        in `train_step` / `test_step`.
        """
        compiled_loss = keras_compat.compiled_loss(self)
        if y is None or compiled_loss is None:
            return ops.zeros(())
        return compiled_loss(y, y_pred, sample_weight)

    # ------------------------------------------------------------- caching

    def cache_teacher_outputs(self, x, batch_size=256, top_k=None):
        """Computes the teacher's targets once, to reuse every epoch.

        Online distillation runs the teacher on every batch of every epoch.
        When the inputs are the same every epoch, its outputs are too: this
        computes them once. Pass the result to `fit` in place of `x`.

        - NumPy arrays (or a dict/list of them): returns an input structure
          holding `x` and the teacher's targets per sample, so
          `fit(cached, y, shuffle=True)` stays correct: targets travel with
          their samples.
        - A `tf.data.Dataset` of `(x,)`, `(x, y)` or `(x, y, sample_weight)`
          batches: returns a dataset whose batches carry the targets. Refused
          (ValueError) when the dataset shuffles or draws random numbers
          (augmentation): its batches would differ between epochs. Shuffle
          arrays instead, or keep the teacher online.

        Args:
            x: NumPy inputs or a batched, deterministic `tf.data.Dataset`.
            batch_size: batch size for running the teacher on arrays.
                Defaults to 256.
            top_k: for language models, keep only the teacher's `top_k`
                most likely tokens per position, as int32 ids and float32
                log-probabilities (`8 * top_k` bytes per position instead of
                `4 * vocab`). Every output term must then be a token term
                (`TokenDistillation`, `GeneralizedJSD`, `SkewKL`) at
                temperature 1: the terms compare the top-k plus one bucket
                for the remaining mass. Defaults to `None` (full outputs).

        Returns:
            The cached inputs or dataset, to pass to `fit` / `evaluate`.
        """
        if self._views.active:
            raise ValueError(views_lib.CACHE_MESSAGE + " Received: augment or mixup set")
        x, indices = indices_lib.unpack(x)
        vocab_size = (
            None
            if top_k is None
            else sequences.check_top_k(
                top_k, self._teachers, self.distillation_losses, self._teacher_taps
            )
        )
        cached = cache_lib.cache_teacher_outputs(
            self, x, batch_size=batch_size, top_k=top_k, vocab_size=vocab_size
        )
        return cached if indices is None else {**cached, indices_lib.INDICES_KEY: indices}

    # ------------------------------------------------------- serialization

    def get_config(self):
        return arguments_lib.distiller_config(self)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**arguments_lib.distiller_arguments(config, custom_objects))
