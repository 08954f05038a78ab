"""Reference models, and loading the user's trained models from files.

Plain Keras models that output logits, for 28x28x1 images by default:
`cnn_teacher` (1.2M parameters), `mlp_student` (203k), `cnn_student` (20k),
the teacher and students of the demo, recipes and benchmarks.

`load_model(path)` reads a trained model from a `.keras` file, a legacy
`.h5` file or a TensorFlow SavedModel folder (through
`keras.layers.TFSMLayer`, wrapped in a Functional model), with one clear
error for anything else. `build_student(spec, teacher)` makes the student of
`kdkeras distill` from a `--student` value: derived from the teacher's
weights (`kdkeras.transfer.shrink`), a file, or a reference student.
`byte_lm` is a byte-level causal Transformer language model built from
keras-hub layers (the `text` extra).
"""

import os

import keras

__all__ = [
    "BUILT_IN_STUDENTS",
    "DEFAULT_STUDENT_SHARE",
    "build_student",
    "byte_lm",
    "check_student",
    "cnn_student",
    "classifier_io",
    "cnn_teacher",
    "load_model",
    "mlp_student",
    "parse_student",
    "smoke_model",
    "wraps_saved_model",
]

_MODEL_FILES = "a .keras file, a legacy .h5 file or a SavedModel folder"


def byte_lm(width=128, blocks=4, heads=4, context=64, name="byte_lm"):
    """A byte-level causal language model: 256 token ids in, next-byte logits out.

    keras-hub's `TokenAndPositionEmbedding`, `blocks` pre-norm
    `TransformerDecoder`s (decoder-only: causal self-attention, MLP of
    `4 * width`, ReLU), a final `LayerNormalization` and a `Dense(256)`.
    The input length is dynamic (up to `context`), so an exported model
    takes any batch size and any length.

    Args:
        width: the embedding width. Defaults to 128.
        blocks: the number of decoder blocks. Defaults to 4.
        heads: attention heads per block. Defaults to 4.
        context: the longest input, in bytes. Defaults to 64.
        name: the model's name. Defaults to `"byte_lm"`.

    Returns:
        A Functional `keras.Model` mapping `(batch, length)` int32 bytes to
        `(batch, length, 256)` logits.

    Raises:
        ImportError: when keras-hub (the `text` extra) is missing.
    """
    try:
        import keras_hub
    except ImportError as e:
        raise ImportError(
            "byte_lm needs keras-hub. Install it with `pip install 'kdkeras[text]'`."
        ) from e
    tokens = keras.Input((None,), dtype="int32", name="bytes")
    x = keras_hub.layers.TokenAndPositionEmbedding(
        vocabulary_size=256, sequence_length=context, embedding_dim=width, name="embedding"
    )(tokens)
    for i in range(blocks):
        x = keras_hub.layers.TransformerDecoder(
            intermediate_dim=4 * width, num_heads=heads, normalize_first=True, name=f"block_{i}"
        )(x)
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
    logits = keras.layers.Dense(256, name="logits")(x)
    return keras.Model(tokens, logits, name=name)


def cnn_teacher(input_shape=(28, 28, 1), num_classes=10, name="teacher"):
    """A 1.2M-parameter CNN (the classic Keras MNIST convnet, wider head).

    Outputs logits. BatchNorm and Dropout included, so that inference mode
    matters for the teacher.
    """
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv1"),
            # momentum 0.9: the few hundred steps of a 4,000-sample run leave
            # the default 0.99 moving statistics far from the data's, and the
            # teacher under-confident in inference mode (test CE 1.1 vs 0.1).
            keras.layers.BatchNormalization(momentum=0.9, name="bn1"),
            keras.layers.Conv2D(64, 3, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Dropout(0.25),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu", name="fc"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name=name,
    )


def mlp_student(input_shape=(28, 28, 1), num_classes=10, name="student"):
    """A 203k-parameter MLP student (784-256-10 on MNIST). Outputs logits."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(256, activation="relu", name="fc"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name=name,
    )


def cnn_student(input_shape=(28, 28, 1), num_classes=10, name="student"):
    """A 20k-parameter CNN student (two narrow strided convolutions). Outputs logits."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv1"),
            keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv2"),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu", name="fc"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name=name,
    )


def smoke_model(path):
    """A tiny CNN trained one epoch on scikit-learn's digits, saved as `.keras` at `path`.

    The model of the export scripts' `--smoke` runs (seconds, offline).
    Returns `path`.
    """
    from kdkeras import datasets
    from kdkeras.utils.atomic import atomic_path

    (x_train, y_train), _ = datasets.load("digits")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=1, verbose=0)
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return path


BUILT_IN_STUDENTS = {"mlp": mlp_student, "cnn": cnn_student}


def _saved_model(path, arg):
    """A SavedModel folder as a Functional model around a `keras.layers.TFSMLayer`."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:  # noqa: BLE001 - any failure means "not a SavedModel"
        raise ValueError(
            f"Expected {_MODEL_FILES} that Keras can load ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:160]}). Received: {arg}={path!r}"
        ) from e
    # `Model.export` names its endpoint "serve"; tf.saved_model.save, "serving_default".
    endpoint = "serve" if hasattr(loaded, "serve") else "serving_default"
    if endpoint == "serve":
        specs = [
            s for c in loaded.serve.concrete_functions for s in c.structured_input_signature[0]
        ]
    elif endpoint in loaded.signatures:
        specs = list(loaded.signatures[endpoint].structured_input_signature[1].values())
    else:
        specs = []
    if len(specs) != 1 or not isinstance(specs[0], tf.TensorSpec):
        raise ValueError(
            "Expected a SavedModel with one input tensor in its 'serve' or "
            f"'serving_default' endpoint. Received: {arg}={path!r} with endpoints "
            f"{list(loaded.signatures)} and inputs {specs}"
        )
    spec = specs[0]
    layer = keras.layers.TFSMLayer(path, call_endpoint=endpoint, trainable=False)
    inputs = keras.Input(tuple(spec.shape[1:]), dtype=spec.dtype.name, name="inputs")
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise ValueError(
                "Expected a SavedModel with one output tensor. Received: "
                f"{arg}={path!r} with outputs {sorted(outputs)}"
            )
        outputs = next(iter(outputs.values()))
    name = os.path.basename(os.path.normpath(path)) or "saved_model"
    return keras.Model(inputs, outputs, name="".join(c if c.isalnum() else "_" for c in name))


def classifier_io(model, arg="model"):
    """`(input_shape, input_dtype, num_classes)` of a classifier with one input and logits.

    Raises:
        ValueError: unknown inputs or outputs (an unbuilt subclassed model),
            several of them, or an output that is not `(batch, classes)`.
    """
    inputs, outputs = getattr(model, "inputs", None), getattr(model, "outputs", None)
    if not inputs or not outputs:
        raise ValueError(
            f"Expected a {arg} with known inputs and outputs (a Functional or "
            f"Sequential model). Received: {arg} {model.name!r}"
        )
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"Expected a {arg} with one input and one output. Received: {arg} "
            f"{model.name!r} with {len(inputs)} inputs and {len(outputs)} outputs"
        )
    out = tuple(outputs[0].shape)
    if len(out) != 2 or out[-1] is None or out[-1] < 2:
        raise ValueError(
            f"Expected a classifier {arg} whose output is (batch, classes) logits. "
            f"Received: {arg} output shape {out}"
        )
    dtype = inputs[0].dtype
    return tuple(inputs[0].shape[1:]), getattr(dtype, "name", str(dtype)), int(out[-1])


def wraps_saved_model(model):
    """Whether `model` came from a SavedModel folder (its layers are hidden in a `TFSMLayer`)."""
    return any(isinstance(layer, keras.layers.TFSMLayer) for layer in model.layers)


def load_model(path, *, safe_mode=True, arg="model"):
    """Loads a trained model from a `.keras` file, a legacy `.h5` file or a SavedModel folder.

    A SavedModel that `keras.models.load_model` cannot read (Keras 3 reads
    only `.keras` and `.h5`) is loaded with `keras.layers.TFSMLayer` and
    wrapped in a Functional model: it runs, and can teach, but its layers
    are hidden from Keras (see `wraps_saved_model`), so it cannot be shrunk
    or tapped for feature terms. A SavedModel runs its own TensorFlow graph:
    load only folders you trust.

    Args:
        path: the file or folder.
        safe_mode: Keras's safe mode: `.keras` files holding code (`Lambda`
            layers) are refused unless `False`. Defaults to `True`.
        arg: the argument name used in error messages. Defaults to
            `"model"`.

    Returns:
        A `keras.Model` (not compiled).

    Raises:
        ValueError: a missing path, or a file or folder that is none of the
            three (one line naming it).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"Expected {_MODEL_FILES}. Received: {arg}={path!r}, which does not exist")
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise ValueError(
                f"Expected {_MODEL_FILES}. Received: {arg}={path!r}, a folder "
                "without saved_model.pb"
            )
        try:
            return keras.models.load_model(path, compile=False, safe_mode=safe_mode)
        except ValueError:
            return _saved_model(path, arg)
    if not path.lower().endswith((".keras", ".h5", ".hdf5")):
        raise ValueError(f"Expected {_MODEL_FILES}. Received: {arg}={path!r}")
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as e:  # noqa: BLE001 - any failure means "not a model"
        message = " ".join(str(e).split())
        hint = ""
        if safe_mode and "safe_mode" in message:
            hint = (
                " It holds code (a Lambda layer), refused in safe mode; if you "
                "trust the file, pass --unsafe-deserialization (command line) "
                "or safe_mode=False."
            )
        raise ValueError(
            f"Expected {_MODEL_FILES} that keras.models.load_model can read "
            f"({type(e).__name__}: {message[:160]}).{hint} Received: {arg}={path!r}"
        ) from e
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"Expected a saved keras.Model. Received: {arg}={path!r} holding a "
            f"{type(model).__name__}"
        )
    return model


# ------------------------------------------------- students from a spec

DEFAULT_STUDENT_SHARE = 0.3  # "about 4x smaller": 1/4, with slack for layers kept whole
# Width shares tried, largest first, for the default student: the first
# that leaves at most DEFAULT_STUDENT_SHARE of the teacher's parameters wins.
_DEFAULT_WIDTHS = (0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1)
_SHRINK_KEYS = {"width": float, "depth": int, "rank": None, "params": None, "scoring": str}
_STUDENT_KINDS = "shrink:width=...,depth=...,rank=..., a .keras file, or one of ['cnn', 'mlp']"


def parse_student(spec):
    """Parses a `--student` value into `(kind, value)`.

    - `None` or `"shrink"`: `("shrink", None)`, the default (about 4x fewer
      parameters than the teacher);
    - `"shrink:width=0.5,depth=2,rank=8"`: `("shrink", {...})`, arguments of
      `kdkeras.transfer.shrink` (`width`, `depth`, `rank`, `params`,
      `scoring`);
    - `"mlp"`, `"cnn"`: `("built-in", name)`, see `BUILT_IN_STUDENTS`;
    - a path ending in `.keras` or `.h5`: `("file", path)`.

    Raises:
        ValueError: for anything else, or an unknown or malformed setting.
    """
    if spec is None or spec == "shrink":
        return "shrink", None
    spec = os.fspath(spec)
    if spec in BUILT_IN_STUDENTS:
        return "built-in", spec
    if spec.lower().endswith((".keras", ".h5", ".hdf5")):
        return "file", spec
    if not spec.startswith("shrink:"):
        raise ValueError(f"Expected --student {_STUDENT_KINDS}. Received: student={spec!r}")
    settings = {}
    for item in filter(None, spec[len("shrink:") :].split(",")):
        key, sep, text = (part.strip() for part in item.partition("="))
        if not sep or key not in _SHRINK_KEYS or not text:
            raise ValueError(
                f"Expected --student shrink:KEY=VALUE,... with keys {sorted(_SHRINK_KEYS)}. "
                f"Received: student={spec!r}"
            )
        kind = _SHRINK_KEYS[key] or (float if any(c in text for c in ".e") else int)
        try:
            settings[key] = kind(text)
        except ValueError as e:
            raise ValueError(
                f"Expected a number for {key} in --student. Received: student={spec!r}"
            ) from e
    return "shrink", settings or None


def _shrink(teacher, settings):
    """`(student, settings used)`: `shrink(**settings)`, or the default search."""
    from kdkeras.transfer import shrink

    if wraps_saved_model(teacher):
        raise ValueError(
            "Expected a teacher whose layers Keras can see, to derive the student "
            "from. Received: a SavedModel teacher (run through keras.layers.TFSMLayer): "
            "it can teach, but it cannot be shrunk. Pass --student mlp, cnn or a .keras file"
        )
    try:
        if settings is not None:
            return shrink(teacher, **settings, verbose=False), settings
        limit = DEFAULT_STUDENT_SHARE * teacher.count_params()
        for width in _DEFAULT_WIDTHS:
            student = shrink(teacher, width=width, verbose=False)
            if student.count_params() <= limit:
                break
        return student, {"width": width}
    except (TypeError, ValueError) as e:
        hint = "" if settings is not None else " Pass --student mlp, cnn or a .keras file."
        raise ValueError(
            f"Cannot derive the student from the teacher: {' '.join(str(e).split())}{hint}"
        ) from e


def build_student(spec, teacher, *, safe_mode=True, seed=0):
    """The student of `kdkeras distill`, from a `--student` value (see `parse_student`).

    The default (`spec=None`) derives the student from the teacher with
    `kdkeras.transfer.shrink`, trying width shares from 0.5 down until at
    most `DEFAULT_STUDENT_SHARE` of the teacher's parameters remain (width 0.5
    of a CNN or MLP keeps about a quarter). Students derived from the teacher
    are named `"student"` and trainable (a teacher saved frozen would give a
    frozen copy).

    Args:
        spec: the `--student` value, or `None`.
        teacher: the teacher (a `keras.Model` with one input and one output).
        safe_mode: Keras's safe mode for a student file. Defaults to `True`.
        seed: the seed of a reference student's initial weights. Defaults to 0.

    Returns:
        `(student, description)`: a `keras.Model` and one line saying what
        was built (the shrink settings chosen, the file, the reference model).

    Raises:
        ValueError: a bad spec, a teacher the spec cannot shrink (naming the
            layer), or a student that does not fit the teacher's inputs or
            outputs.
    """
    kind, value = parse_student(spec)
    input_shape = tuple(teacher.inputs[0].shape[1:])
    num_classes = int(teacher.outputs[0].shape[-1])
    keras.utils.set_random_seed(seed)
    if kind == "built-in":
        student = BUILT_IN_STUDENTS[value](input_shape, num_classes)
        description = f"{value!r} (kdkeras.models.{value}_student)"
    elif kind == "file":
        student, description = load_model(value, safe_mode=safe_mode, arg="student"), value
    else:
        derived, used = _shrink(teacher, value)
        one = lambda tensors: tensors[0] if len(tensors) == 1 else tensors  # noqa: E731
        student = keras.Model(one(derived.inputs), one(derived.outputs), name="student")
        for layer in student.layers:
            layer.trainable = True  # layers copied from a frozen teacher come frozen
        how = "as given" if value is not None else "chosen for about 4x fewer parameters"
        description = (
            f"shrink({', '.join(f'{k}={v}' for k, v in used.items())}) of the teacher, {how}"
        )
    check_student(student, teacher)
    return student, description


def check_student(student, teacher):
    """Raises a ValueError unless `student` takes the teacher's inputs and gives its outputs."""
    want_in, want_out = tuple(teacher.inputs[0].shape[1:]), tuple(teacher.outputs[0].shape[1:])
    inputs, outputs = getattr(student, "inputs", None), getattr(student, "outputs", None)
    if inputs:
        got = tuple(inputs[0].shape[1:])
        fits = len(inputs) == 1 and len(got) == len(want_in)
        fits = fits and all(a is None or b is None or a == b for a, b in zip(got, want_in))
        if not fits:
            raise ValueError(
                f"Expected a student that takes the teacher's inputs {want_in}. "
                f"Received: student inputs {[tuple(i.shape[1:]) for i in inputs]}"
            )
    if outputs and (len(outputs) != 1 or tuple(outputs[0].shape[1:]) != want_out):
        raise ValueError(
            f"Expected a student with the teacher's output shape {want_out}. "
            f"Received: student outputs {[tuple(o.shape[1:]) for o in outputs]}"
        )
