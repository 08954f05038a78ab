import keras
import numpy as np
import pytest
from keras import layers as L

from kdkeras import transfer

RNG = np.random.default_rng(0)


def _mlp():
    inputs = keras.Input((6,), name="x")
    x = L.Dense(8, activation="relu", name="h1")(inputs)
    x = L.Dense(8, activation="relu", name="h2")(x)
    return keras.Model(inputs, L.Dense(3, name="out")(x), name="mlp")


def _convnet(blocks=4):
    """Stem, residual blocks with BN and a depthwise conv, a concatenation,
    Flatten and Dense: every slicing rule of the width transfer."""
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    for i in range(blocks):
        y = L.Conv2D(8, 3, padding="same", name=f"b{i}_c1")(x)
        y = L.BatchNormalization(name=f"b{i}_bn1")(y)
        y = L.ReLU(name=f"b{i}_relu")(y)
        y = L.DepthwiseConv2D(3, padding="same", name=f"b{i}_dw")(y)
        y = L.Conv2D(8, 1, name=f"b{i}_c2")(y)
        y = L.BatchNormalization(name=f"b{i}_bn2")(y)
        x = L.Add(name=f"b{i}_add")([x, y])
        x = L.ReLU(name=f"b{i}_out")(x)
    a = L.Conv2D(4, 1, name="ca")(x)
    b = L.Conv2D(6, 1, name="cb")(x)
    x = L.Concatenate(name="cat")([a, b])
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(16, activation="relu", name="fc")(x)
    x = L.Dropout(0.2, name="drop")(x)
    model = keras.Model(inputs, L.Dense(3, name="out")(x), name="convnet")
    for layer in model.layers:  # non-trivial statistics, so slicing shows
        if isinstance(layer, L.BatchNormalization):
            layer.set_weights(
                [RNG.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()]
            )
    return model


def _encoder(n=4, dim=8):
    inputs = keras.Input((5,), dtype="int32")
    x = L.Embedding(20, dim, name="emb")(inputs)
    for i in range(n):
        a = L.MultiHeadAttention(2, 4, name=f"enc{i}_mha")(x, x)
        x = L.LayerNormalization(name=f"enc{i}_ln1")(L.Add(name=f"enc{i}_add1")([x, a]))
        f = L.Dense(16, activation="gelu", name=f"enc{i}_ff1")(x)
        f = L.Dense(dim, name=f"enc{i}_ff2")(f)
        x = L.LayerNormalization(name=f"enc{i}_ln2")(L.Add(name=f"enc{i}_add2")([x, f]))
    x = L.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inputs, L.Dense(3, name="out")(x), name="encoder")


def _sequential():
    return keras.Sequential(
        [keras.Input((6,))]
        + [L.Dense(8, activation="relu", name=f"d{i}") for i in range(4)]
        + [L.Dense(2, name="out")],
        name="seq",
    )


def _inputs(model, n=4):
    x = model.inputs[0]
    if "int" in str(x.dtype):
        return RNG.integers(0, 20, (n, *x.shape[1:]))
    return RNG.random((n, *x.shape[1:])).astype("float32")


def _w(model, layer, name="kernel"):
    (w,) = [w for w in model.get_layer(layer).weights if w.name == name]
    return w.numpy()


def _predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


# -- shrink with nothing removed ------------------------------------------------


@pytest.mark.parametrize("build", [_mlp, _convnet, _encoder, _sequential])
def test_identity_reproduces_teacher(build):
    teacher = build()
    x = _inputs(teacher)
    student = transfer.shrink(teacher, verbose=False)
    assert isinstance(student, keras.Model) and student is not teacher
    assert type(student).__name__ == "Functional"
    np.testing.assert_allclose(_predict(student, x), _predict(teacher, x), atol=1e-6)
    assert student.count_params() == teacher.count_params()
    # The student owns its variables: training it leaves the teacher alone.
    old = teacher.weights[0].numpy().copy()
    student.weights[0].assign(student.weights[0] + 1.0)
    np.testing.assert_array_equal(teacher.weights[0].numpy(), old)


def test_shrink_prints_parameter_counts(capsys):
    teacher = _convnet()
    student = transfer.shrink(teacher, width=0.5, depth=2)
    out = capsys.readouterr().out
    line = f"parameters: {teacher.count_params():,} -> {student.count_params():,}"
    assert line in out
    assert "kept b0, b2" in out and "b0_c1 (Conv2D): filters 8 -> 4" in out


def test_shrink_rejects_subclassed_model():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(TypeError, match="Received: teacher="):
        transfer.shrink(net, verbose=False)


# -- width ----------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_width_keeps_top_norm_units_and_slices_next_layer(norm):
    teacher = _mlp()
    student = transfer.prune_width(teacher, {"h1": 3, "h2": 0.5}, scoring=norm)
    k1, k2, k3 = (_w(teacher, n) for n in ("h1", "h2", "out"))

    def top(kernel, k):
        s = np.abs(kernel).sum(0) if norm == "l1" else np.sqrt((kernel**2).sum(0))
        return np.sort(np.argsort(-s, kind="stable")[:k])

    i1, i2 = top(k1, 3), top(k2, 4)  # scored on the teacher's full weights
    np.testing.assert_array_equal(_w(student, "h1"), k1[:, i1])
    np.testing.assert_array_equal(_w(student, "h1", "bias"), _w(teacher, "h1", "bias")[i1])
    np.testing.assert_array_equal(_w(student, "h2"), k2[i1][:, i2])
    np.testing.assert_array_equal(_w(student, "out"), k3[i2])
    np.testing.assert_array_equal(_w(student, "out", "bias"), _w(teacher, "out", "bias"))
    assert student.count_params() == (6 * 3 + 3) + (3 * 4 + 4) + (4 * 3 + 3)


def _kill(teacher):
    """Zeroes a random half of each channel group: producer kernels (so they
    score lowest) and consumer input rows (so removing them changes nothing).
    Returns the alive channels per group."""
    alive = {}

    def pick(n):
        return np.sort(RNG.permutation(n)[: n // 2])

    def set_w(layer, name, fn):
        weights = teacher.get_layer(layer).weights
        (w,) = [w for w in weights if w.name == name]
        w.assign(fn(w.numpy().copy()))

    def zero_out(layer, keep, axis=-1):
        def fn(k):
            dead = np.setdiff1d(np.arange(k.shape[axis]), keep)
            idx = [slice(None)] * k.ndim
            idx[axis] = dead
            k[tuple(idx)] = 0.0
            return k

        set_w(layer, "kernel", fn)

    blocks = sorted({l.name.split("_")[0] for l in teacher.layers if l.name.endswith("_c1")})
    alive["stream"] = pick(8)
    for layer in ["stem"] + [f"{b}_c2" for b in blocks]:
        zero_out(layer, alive["stream"])
    for layer in [f"{b}_c1" for b in blocks] + ["ca", "cb"]:
        zero_out(layer, alive["stream"], axis=-2)
    for b in blocks:
        alive[b] = pick(8)
        zero_out(f"{b}_c1", alive[b])
        zero_out(f"{b}_c2", alive[b], axis=-2)
    alive["ca"], alive["cb"] = pick(4), pick(6)
    zero_out("ca", alive["ca"])
    zero_out("cb", alive["cb"])
    cat = np.concatenate([alive["ca"], 4 + alive["cb"]])
    rows = np.concatenate([s * 10 + cat for s in range(16)])  # 4x4 positions
    zero_out("fc", rows, axis=0)
    alive["rows"] = rows
    alive["fc"] = pick(16)
    zero_out("fc", alive["fc"])
    zero_out("out", alive["fc"], axis=0)
    return alive


@pytest.mark.parametrize("width", [0.5, "dict"])
def test_width_removes_dead_channels_exactly(width):
    teacher = _convnet(blocks=2)
    alive = _kill(teacher)
    x = _inputs(teacher)
    if width == "dict":
        width = {"stem": 4, "b0_c1": 4, "b1_c1": 0.5, "ca": 2, "cb": 3, "fc": 8}
    student = transfer.prune_width(teacher, width)
    # Any misaligned slice (BN, depthwise, Add, concat offsets, flatten rows)
    # would change the outputs.
    np.testing.assert_allclose(_predict(student, x), _predict(teacher, x), atol=1e-5)
    stream = alive["stream"]
    for layer in ("stem", "b0_c2", "b1_c2"):  # joined by the Adds
        assert _w(student, layer).shape[-1] == 4
    np.testing.assert_array_equal(_w(student, "stem"), _w(teacher, "stem")[..., stream])
    np.testing.assert_array_equal(
        _w(student, "b1_c1"), _w(teacher, "b1_c1")[:, :, stream][..., alive["b1"]]
    )
    for name in ("gamma", "moving_mean", "moving_variance"):
        np.testing.assert_array_equal(
            _w(student, "b0_bn1", name), _w(teacher, "b0_bn1", name)[alive["b0"]]
        )
        np.testing.assert_array_equal(
            _w(student, "stem_bn", name), _w(teacher, "stem_bn", name)[stream]
        )
    np.testing.assert_array_equal(_w(student, "b0_dw"), _w(teacher, "b0_dw")[:, :, alive["b0"]])
    np.testing.assert_array_equal(
        _w(student, "fc"), _w(teacher, "fc")[alive["rows"]][:, alive["fc"]]
    )
    assert _w(student, "out").shape == (8, 3)  # the output keeps its units


def test_width_activation_scoring_keeps_active_units():
    teacher = _mlp()
    k, b = teacher.get_layer("h1").get_weights()
    k[:, :4] *= 10.0  # largest weights...
    b[:4] = -1000.0  # ...but never active
    teacher.get_layer("h1").set_weights([k, b])
    data = _inputs(teacher, 32)
    by_norm = transfer.prune_width(teacher, {"h1": 4})
    by_activation = transfer.prune_width(teacher, {"h1": 4}, scoring="activation", data=data)
    hidden = keras.Model(teacher.input, teacher.get_layer("h1").output)
    mean_abs = np.abs(_predict(hidden, data)).mean(0)
    expected = np.sort(np.argsort(-mean_abs, kind="stable")[:4])
    assert set(expected).isdisjoint(range(4))
    np.testing.assert_array_equal(_w(by_activation, "h1"), k[:, expected])
    np.testing.assert_array_equal(_w(by_norm, "h1"), k[:, :4])


def test_width_separable_conv_and_embedding():
    inputs = keras.Input((6, 6, 2))
    x = L.Conv2D(6, 1, name="a")(inputs)
    x = L.SeparableConv2D(4, 3, depth_multiplier=2, name="sep")(x)
    teacher = keras.Model(inputs, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(x)))
    alive = np.array([0, 3, 5])
    kernel, bias = teacher.get_layer("a").get_weights()
    kernel[..., np.setdiff1d(np.arange(6), alive)] = 0.0
    teacher.get_layer("a").set_weights([kernel, bias])
    depthwise, pointwise, sep_bias = teacher.get_layer("sep").get_weights()
    depthwise[:, :, np.setdiff1d(np.arange(6), alive)] = 0.0  # dead inputs add 0
    teacher.get_layer("sep").set_weights([depthwise, pointwise, sep_bias])
    x = _inputs(teacher)
    student = transfer.prune_width(teacher, {"a": 3})
    np.testing.assert_allclose(_predict(student, x), _predict(teacher, x), atol=1e-5)
    rows = (alive[:, None] * 2 + np.arange(2)).ravel()  # depth multiplier 2
    np.testing.assert_array_equal(_w(student, "sep", "pointwise_kernel"), pointwise[:, :, rows])
    np.testing.assert_array_equal(_w(student, "sep", "depthwise_kernel"), depthwise[:, :, alive])

    tokens = keras.Input((5,), dtype="int32")
    h = L.GlobalAveragePooling1D()(L.Embedding(20, 8, name="emb")(tokens))
    teacher = keras.Model(tokens, L.Dense(2, name="out")(h))
    student = transfer.prune_width(teacher, {"emb": 3})
    table = _w(teacher, "emb", "embeddings")
    kept = np.sort(np.argsort(-np.abs(table).sum(0), kind="stable")[:3])
    np.testing.assert_array_equal(_w(student, "emb", "embeddings"), table[:, kept])
    np.testing.assert_array_equal(_w(student, "out"), _w(teacher, "out")[kept])


def test_width_scores_filters_folded_with_their_batchnorm():
    inputs = keras.Input((4, 4, 2))
    x = L.Conv2D(4, 1, use_bias=False, name="c")(inputs)
    x = L.ReLU()(L.BatchNormalization(name="bn")(x))
    teacher = keras.Model(inputs, L.Dense(2, name="out")(L.Flatten()(x)))
    kernel = np.array([[4.0, 3.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0]]).reshape(1, 1, 2, 4)
    teacher.get_layer("c").set_weights([kernel.astype("float32")])
    gamma = np.array([0.1, 1.0, 1.0, 0.1], "float32")
    ones, zeros = np.ones(4, "float32"), np.zeros(4, "float32")
    teacher.get_layer("bn").set_weights([gamma, zeros, zeros, ones])
    # Folded L1 norms 0.4, 3, 2, 0.1 (over sqrt(1 + eps)): filters 1 and 2.
    student = transfer.prune_width(teacher, {"c": 2})
    np.testing.assert_array_equal(_w(student, "c"), kernel[..., [1, 2]])
    np.testing.assert_array_equal(_w(student, "bn", "gamma"), gamma[[1, 2]])


def _shared(second_input_concat):
    a_in, b_in = keras.Input((4,)), keras.Input((4,))
    a = L.Dense(8, name="a")(a_in)
    if second_input_concat:
        b = L.Concatenate(name="cat")([L.Dense(4, name="b")(b_in), L.Dense(4, name="c")(b_in)])
    else:
        b = L.Dense(8, name="b")(b_in)
    shared = L.Dense(5, name="shared")
    out = L.Dense(2, name="out")(L.Add(name="add")([shared(a), shared(b)]))
    return keras.Model([a_in, b_in], out)


def test_width_shared_layer_slices_both_calls():
    teacher = _shared(second_input_concat=False)
    x = [_inputs(teacher), _inputs(teacher)]
    student = transfer.prune_width(teacher, {"a": 6, "shared": 3})
    # One input row mask for both calls: a and b are pruned together.
    assert _w(student, "b").shape == (4, 6) and _w(student, "shared").shape == (6, 3)
    full = transfer.prune_width(teacher, {"a": 8})
    np.testing.assert_allclose(_predict(full, x), _predict(teacher, x), atol=1e-6)
    with pytest.raises(ValueError, match="must keep the same number"):
        transfer.prune_width(teacher, {"a": 6, "b": 5})


def test_width_errors_name_the_layer():
    with pytest.raises(ValueError, match=r"layer 'shared' \(Dense\) is shared"):
        transfer.prune_width(_shared(second_input_concat=True), {"a": 4})
    inputs = keras.Input((6,))
    x = L.Dense(8, name="d")(inputs)
    x = L.Reshape((2, 4), name="reshape")(x)
    model = keras.Model(inputs, L.Flatten()(x))
    with pytest.raises(ValueError, match=r"layer 'd' \(Dense\).*'reshape' \(Reshape\)"):
        transfer.prune_width(model, {"d": 4})
    mlp = _mlp()
    with pytest.raises(ValueError, match=r"'out'.*model output"):
        transfer.prune_width(mlp, {"out": 2})
    with pytest.raises(ValueError, match="'drop' \\(Dropout\\) has no units of its own"):
        transfer.prune_width(_convnet(blocks=1), {"drop": 2})
    with pytest.raises(ValueError, match="Received: width={'nope': 2}"):
        transfer.prune_width(mlp, {"nope": 2})
    with pytest.raises(ValueError, match="Received: width=1.5"):
        transfer.prune_width(mlp, 1.5)
    with pytest.raises(ValueError, match="Received: width={'h1': 9}"):
        transfer.prune_width(mlp, {"h1": 9})
    with pytest.raises(ValueError, match="Received: data=None"):
        transfer.prune_width(mlp, 0.5, scoring="activation")
    with pytest.raises(ValueError, match=r"'enc0_ln1' \(LayerNormalization\)"):
        transfer.prune_width(_encoder(n=1), {"enc0_ff2": 4})
    message = r"name Dense, Conv or Embedding.*'enc0_ln1' \(LayerNormalization\)"
    with pytest.raises(ValueError, match=message):
        transfer.prune_width(_encoder(n=1), {"enc0_ln1": 4})


def test_width_transformer_ffn():
    teacher = _encoder(n=2)
    student = transfer.prune_width(teacher, 0.5)
    # Only the FFN hidden units are free: the residual stream meets
    # MultiHeadAttention and LayerNormalization.
    for i in range(2):
        assert _w(student, f"enc{i}_ff1").shape == (8, 8)
        assert _w(student, f"enc{i}_ff2").shape == (8, 8)
    assert _w(student, "emb", "embeddings").shape == (20, 8)
    assert student(_inputs(teacher)).shape == (4, 3)


# -- depth ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, names",
    [
        (_convnet, ["b0", "b1", "b2", "b3"]),
        (_encoder, ["enc0", "enc1", "enc2", "enc3"]),
        (_sequential, ["d0", "d1", "d2", "d3"]),
    ],
)
def test_find_blocks(build, names):
    (stack,) = transfer.find_blocks(build())
    assert [b.name for b in stack] == names
    assert stack[1].input_shape == stack[1].output_shape


def test_find_blocks_from_prefixes():
    teacher = _encoder()
    (stack,) = transfer.find_blocks(teacher, blocks=["enc1_", "enc3_"])
    assert [b.name for b in stack] == ["enc1", "enc3"]
    assert stack[0].layers[:2] == ("enc1_mha", "enc1_add1")


@pytest.mark.parametrize("keep", [2, ["enc0", "enc2"]])
def test_keep_blocks_copies_the_kept_blocks(keep):
    teacher = _encoder()
    student = transfer.keep_blocks(teacher, keep)
    names = {l.name for l in student.layers}
    assert not any(n.startswith(("enc1_", "enc3_")) for n in names)
    for layer in ("enc2_ff1", "enc2_mha", "enc0_ln2", "emb", "out"):
        expected = teacher.get_layer(layer).get_weights()
        for a, b in zip(expected, student.get_layer(layer).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    removed = sum(l.count_params() for l in teacher.layers if l.name.startswith(("enc1_", "enc3_")))
    assert student.count_params() == teacher.count_params() - removed
    # The input of enc1 now feeds enc2.
    (node,) = student.get_layer("enc2_add1")._inbound_nodes
    assert node.input_tensors[0]._keras_history.operation.name == "enc0_ln2"


def test_removing_identity_residual_blocks_changes_nothing():
    teacher = _convnet()
    for b in ("b1", "b3"):  # residual branch outputs zero: the block is identity
        bn = teacher.get_layer(f"{b}_bn2")
        gamma, beta, mean, var = bn.get_weights()
        bn.set_weights([0 * gamma, 0 * beta, mean, var])
    x = _inputs(teacher)
    student = transfer.keep_blocks(teacher, 2, blocks=["b0_", "b1_", "b2_", "b3_"])
    np.testing.assert_allclose(_predict(student, x), _predict(teacher, x), atol=1e-6)
    assert "b1_c1" not in {l.name for l in student.layers}


def test_keep_blocks_errors():
    seq = _sequential()
    with pytest.raises(ValueError, match=r"Cannot remove block 'd0'.*\(None, 6\)"):
        transfer.keep_blocks(seq, ["d1", "d2"])
    with pytest.raises(ValueError, match=r"Received: keep=\['nope'\]"):
        transfer.keep_blocks(seq, ["nope"])
    with pytest.raises(ValueError, match="Received: keep=0"):
        transfer.keep_blocks(seq, 0)
    with pytest.raises(ValueError, match="no layer name starts with 'zz'"):
        transfer.find_blocks(seq, blocks=["zz"])
    with pytest.raises(ValueError, match="one input tensor and one output tensor"):
        transfer.find_blocks(_convnet(), blocks=["b0_c", "b1_"])


# -- low rank -------------------------------------------------------------------


def _truncated(matrix, r):
    u, s, vt = np.linalg.svd(matrix.astype("float64"), full_matrices=False)
    return (u[:, :r] * s[:r]) @ vt[:r], s


def test_low_rank_dense_is_truncated_svd():
    teacher = _mlp()
    student = transfer.low_rank(teacher, {"h2": 3})
    a, b = _w(student, "h2_lowrank"), _w(student, "h2")
    assert a.shape == (8, 3) and b.shape == (3, 8)
    assert student.get_layer("h2_lowrank").bias is None
    approx, s = _truncated(_w(teacher, "h2"), 3)
    np.testing.assert_allclose(a @ b, approx, atol=1e-5)
    error = np.linalg.norm(a @ b - _w(teacher, "h2"))
    np.testing.assert_allclose(error, np.sqrt((s[3:] ** 2).sum()), rtol=1e-4)
    np.testing.assert_array_equal(_w(student, "h2", "bias"), _w(teacher, "h2", "bias"))
    x = _inputs(teacher)
    h1 = keras.Model(teacher.input, teacher.get_layer("h1").output)(x)
    h1 = keras.ops.convert_to_numpy(h1)
    expected = np.maximum(h1 @ approx + _w(teacher, "h2", "bias"), 0) @ _w(teacher, "out")
    expected += _w(teacher, "out", "bias")
    np.testing.assert_allclose(_predict(student, x), expected, atol=1e-5)


@pytest.mark.parametrize("r", [2, 4])
def test_low_rank_conv(r):
    teacher = _convnet(blocks=1)
    student = transfer.low_rank(teacher, {"b0_c1": r})
    a, b = _w(student, "b0_c1_lowrank"), _w(student, "b0_c1")
    assert a.shape == (3, 3, 8, r) and b.shape == (1, 1, r, 8)
    approx, _ = _truncated(_w(teacher, "b0_c1").reshape(72, 8), r)
    np.testing.assert_allclose(a.reshape(72, r) @ b.reshape(r, 8), approx, atol=1e-5)
    full = transfer.low_rank(teacher, {"b0_c1": 8})  # full rank: same function
    x = _inputs(teacher)
    np.testing.assert_allclose(_predict(full, x), _predict(teacher, x), atol=1e-5)


def test_low_rank_by_energy_and_params():
    teacher = _mlp()
    _, s = _truncated(_w(teacher, "h2"), 8)
    share = np.cumsum(s**2) / (s**2).sum()
    expected = int(np.argmax(share >= 0.9)) + 1
    student = transfer.low_rank(teacher, {"h2": 0.9})
    assert _w(student, "h2_lowrank").shape == (8, expected)
    # 8x8 kernel + 8 bias; one rank costs 16: a budget of 45 fits rank 2.
    student = transfer.low_rank(teacher, params={"h2": 45})
    assert _w(student, "h2_lowrank").shape == (8, 2)
    assert sum(student.get_layer(n).count_params() for n in ("h2", "h2_lowrank")) <= 45
    student = transfer.low_rank(teacher, params={"h2": 0.5})  # 72 * 0.5 = 36
    assert _w(student, "h2_lowrank").shape == (8, 1)


def test_low_rank_default_only_saves_parameters():
    inputs = keras.Input((32,))
    x = L.Dense(32, name="wide")(inputs)
    model = keras.Model(inputs, L.Dense(2, name="head")(x))
    student = transfer.low_rank(model, 4)
    assert _w(student, "wide_lowrank").shape == (32, 4)
    assert "head_lowrank" not in {l.name for l in student.layers}  # 4 > 2: no saving
    assert student.count_params() == (32 * 4 + 4 * 32 + 32) + (32 * 2 + 2)


def test_low_rank_errors():
    teacher = _convnet(blocks=1)
    with pytest.raises(ValueError, match=r"layer 'b0_bn1' \(BatchNormalization\)"):
        transfer.low_rank(teacher, {"b0_bn1": 2})
    with pytest.raises(ValueError, match=r"at most 8.*Received: rank={'b0_c2': 9}"):
        transfer.low_rank(teacher, {"b0_c2": 9})
    with pytest.raises(ValueError, match="exactly one of `rank` and `params`"):
        transfer.low_rank(teacher, 2, params=10)
    with pytest.raises(ValueError, match="too small"):
        transfer.low_rank(teacher, params={"b0_c2": 10})


# -- the student is plain Keras -------------------------------------------------


def test_student_saves_and_loads_without_custom_objects(tmp_path):
    teacher = _convnet(blocks=2)
    student = transfer.shrink(teacher, width=0.5, depth=2, rank={"fc": 4}, verbose=False)
    x = _inputs(teacher)
    path = str(tmp_path / "student.keras")
    student.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(_predict(loaded, x), _predict(student, x), atol=1e-6)
    assert all(type(l).__module__.startswith("keras.") for l in loaded.layers)


def test_student_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(6, 3, name="c")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Flatten()(L.ReLU()(x))
    teacher = keras.Model(inputs, L.Dense(3, name="out")(L.Dense(12, name="fc")(x)))
    student = transfer.shrink(teacher, width=0.5, rank={"fc": 2}, verbose=False)
    x = RNG.random((3, 8, 8, 1)).astype("float32")
    expected = _predict(student, x)
    path = str(tmp_path / "student.onnx")
    student.export(path, format="onnx", verbose=False)
    session = ort.InferenceSession(path)
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(got, expected, atol=1e-4)
