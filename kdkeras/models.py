"""Reference models: the teacher and students of the demo, recipes and benchmarks.

Plain Keras models that output logits, for 28x28x1 images by default:
`cnn_teacher` (1.2M parameters), `mlp_student` (203k), `cnn_student` (20k).
`byte_lm` is a byte-level causal Transformer language model built from
keras-hub layers (the `text` extra).
"""

import keras

__all__ = ["byte_lm", "cnn_student", "cnn_teacher", "mlp_student", "smoke_model"]


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
