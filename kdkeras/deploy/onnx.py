"""The ONNX format for `kdkeras.deploy.export`: two routes and the graph fixes.

Route "keras" is `Model.export(format="onnx")`; route "saved_model" is
tf2onnx on a SavedModel export (what `python -m tf2onnx.convert
--saved-model` does). Either way the graph is then repaired (`Erfc`, which
tf2onnx leaves unconverted, becomes `1 - Erf`), checked for leftover
TensorFlow ops and by `onnx.checker`, and written atomically.
"""

import contextlib
import os
import tempfile

import numpy as np

from kdkeras.deploy import runners
from kdkeras.deploy import signatures
from kdkeras.deploy.errors import ConversionError
from kdkeras.deploy.errors import layers_named_in
from kdkeras.utils import keras_compat
from kdkeras.utils.atomic import atomic_path
from kdkeras.utils.atomic import atomic_write_bytes

__all__ = ["write_onnx"]


def _fix_onnx(proto):
    """Rewrites known-unconverted TF ops; names the dynamic batch dimension.

    Returns the list of fixes applied (for the manifest).
    """
    onnx = runners.require("onnx")
    from onnx import helper
    from onnx import numpy_helper

    fixes = []
    graph = proto.graph
    new_nodes, n_erfc = [], 0
    one_name = None
    for node in graph.node:
        # tf2onnx copies `Erfc` (from exact GELU) unconverted; onnxruntime
        # then refuses the file. Remove once tf2onnx converts Erfc itself.
        if node.op_type == "Erfc" and node.domain in ("", "ai.onnx"):
            if one_name is None:
                one_name = "kdk_erfc_one"
                graph.initializer.append(
                    numpy_helper.from_array(np.array(1.0, dtype="float32"), one_name)
                )
            erf_out = f"{node.output[0]}__erf"
            new_nodes.append(
                helper.make_node("Erf", [node.input[0]], [erf_out], name=f"{node.name}_erf")
            )
            new_nodes.append(
                helper.make_node(
                    "Sub",
                    [one_name, erf_out],
                    list(node.output),
                    name=f"{node.name}_one_minus_erf",
                )
            )
            n_erfc += 1
        else:
            new_nodes.append(node)
    if n_erfc:
        del graph.node[:]
        graph.node.extend(new_nodes)
        fixes.append(f"Erfc -> 1 - Erf ({n_erfc} node(s))")
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    del onnx
    return fixes


def _unconverted_ops(proto):
    from onnx import defs

    bad = set()
    opset = {o.domain: o.version for o in proto.opset_import}
    for node in proto.graph.node:
        domain = node.domain or ""
        if domain in ("", "ai.onnx"):
            try:
                defs.get_schema(node.op_type, opset.get("", 18), "")
            except Exception:  # noqa: BLE001 - SchemaError on unknown ops
                bad.add(node.op_type)
    return sorted(bad)


@contextlib.contextmanager
def _inline_xla_functions():
    """Traces nested `tf.function(jit_compile=True)` calls as plain ops.

    Keras's TensorFlow backend wraps grouped convolutions (ConvNeXt's
    depthwise `Conv2D(groups=C)`) in a `tf.function(jit_compile=True)`,
    because TF's CPU kernels lack them. The call becomes a
    `StatefulPartitionedCall` marked for XLA, which neither freezing nor
    Grappler inlines, so tf2onnx copies it unconverted on every route.
    With functions run eagerly, the outer trace (an explicit
    `get_concrete_function`) records the inner function's ops in place;
    tf2onnx then writes an ONNX `Conv` with `group`. Only for ONNX: the
    SavedModel and LiteRT artifacts keep the XLA call (TF's CPU runtime
    needs it). Remove once tf2onnx inlines XLA-marked calls.
    """
    import tensorflow as tf

    previous = tf.config.functions_run_eagerly()
    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(previous)


def _onnx_via_keras(model, tmp, specs, opset):
    import warnings

    arg = signatures.export_signature(model, specs)
    with warnings.catch_warnings():
        # Keras's tf2onnx shim probes `np.object`, which NumPy 2 warns about
        # on every export (harmless; remove once Keras drops the probe).
        warnings.filterwarnings("ignore", message=".*np.object.*", category=FutureWarning)
        model.export(
            tmp,
            format="onnx",
            verbose=False,
            input_signature=arg,
            opset_version=opset,
        )


def _onnx_via_saved_model(model, tmp, specs, opset):
    """tf2onnx on a SavedModel export: the route of `python -m tf2onnx.convert
    --saved-model`."""
    import tensorflow as tf

    tf_loader = runners.require("tf2onnx.tf_loader")
    runners.require("tf2onnx.convert")
    # tf2onnx 1.17 still uses `np.object` etc. (removed in NumPy 2); Keras
    # ships the patch. Remove once tf2onnx supports NumPy 2.
    keras_compat.patch_tf2onnx_for_numpy2()
    with tempfile.TemporaryDirectory() as folder:
        sm = os.path.join(folder, "saved_model")
        arg = signatures.export_signature(model, specs)
        model.export(sm, format="tf_saved_model", verbose=False, input_signature=arg)
        graph_def, inputs, outputs, tables, renames = tf_loader.from_saved_model(
            sm,
            None,
            None,
            "serve",
            ["serving_default"],
            None,
            False,
            return_initialized_tables=True,
            return_tensors_to_rename=True,
        )
        with tf.device("/cpu:0"):
            keras_compat.tf2onnx_convert_graph(
                graph_def,
                name=sm,
                opset=opset,
                input_names=inputs,
                output_names=outputs,
                tensors_to_rename=renames,
                initialized_tables=tables,
                output_path=tmp,
            )


def _checked_graph(proto, specs):
    """Applies the fixes, then refuses a graph that cannot run as the model does.

    Returns the fixes applied; raises `ConversionError` for unconverted
    TensorFlow ops or for graph inputs that are not the model's.
    """
    fixes = _fix_onnx(proto)
    bad = _unconverted_ops(proto)
    if bad:
        nodes = [n.name for n in proto.graph.node if n.op_type in bad]
        raise ConversionError(
            "Expected an ONNX graph of standard operators; tf2onnx left "
            f"TensorFlow ops unconverted. Received: ops={bad}",
            ops=bad,
            nodes=nodes,
        )
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != len(specs):
        # Model.export's tf2onnx call (`from_function`) makes every captured
        # non-variable tensor a graph input: EfficientNet's Normalization
        # constants (mean, variance) then have to be fed by the caller.
        extra = inputs[len(specs) :] if len(inputs) > len(specs) else []
        raise ConversionError(
            f"Expected an ONNX graph with {len(specs)} input(s), one per model "
            f"input; captured constants became inputs. Received: inputs={inputs}",
            ops=[],
            nodes=extra,
        )
    return fixes


def write_onnx(model, path, specs, opset, route):
    """Converts with each route in turn until one gives a graph that passes the checks.

    A route whose graph holds unconverted TensorFlow ops, extra inputs or
    fails `onnx.checker` counts as failed, and the next is tried (with
    `route="auto"`). When every route fails, `ConversionError` names the
    ops, the layers they come from and the formats that do work.
    """
    onnx = runners.require("onnx")
    runners.require("tf2onnx")
    routes = {"keras": _onnx_via_keras, "saved_model": _onnx_via_saved_model}
    if route not in ("auto",) + tuple(routes):
        raise ValueError(
            f"Expected route 'auto', 'keras' or 'saved_model'. Received: route={route!r}"
        )
    order = ["keras", "saved_model"] if route == "auto" else [route]
    with atomic_path(path, suffix=".onnx") as tmp:
        errors, ops, nodes = [], set(), []
        for name in order:
            try:
                with _inline_xla_functions():
                    routes[name](model, tmp, specs, opset)
                proto = onnx.load(tmp)
                fixes = _checked_graph(proto, specs)
                onnx.checker.check_model(proto)
                used = name
                break
            except ConversionError as e:
                errors.append(f"{name}: {e}")
                ops.update(e.ops)
                nodes.extend(e.nodes)
            except Exception as e:  # noqa: BLE001 - try the next route
                errors.append(f"{name}: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
        else:
            layers = layers_named_in(model, nodes)
            raise ConversionError(
                "Expected a model that tf2onnx "
                f"{runners.require('tf2onnx').__version__} can convert to ONNX"
                f"{f' (TensorFlow ops {sorted(ops)} are left unconverted)' if ops else ''}. "
                "Export with format='saved_model' or 'keras' instead (the TensorFlow "
                "runtime runs every TensorFlow op). "
                f"Received: layers={layers}, routes tried: {' | '.join(errors)}",
                ops=sorted(ops),
                nodes=nodes,
                layers=layers,
                alternatives=["saved_model", "keras"],
            )
        atomic_write_bytes(tmp, proto.SerializeToString())
    return {"route": used, "fixes": fixes, "fallback_errors": errors}
