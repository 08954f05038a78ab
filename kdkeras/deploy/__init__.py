"""Deployment: export with a parity gate, int8 quantization, benchmark, report.

This subpackage never imports `kdkeras.distill` or `kdkeras.losses`: it
works on any plain Keras model, and an exported student holds no kdkeras
object. tf2onnx, onnx and onnxruntime (the `export` extra) and matplotlib
(the `plot` extra) are imported only by the functions that need them.

Modules: `exporter` (`export`, `gate`), one module per format (`keras_file`,
`saved_model`, `onnx`, `litert`), `signatures` (input specs), `parity` (the
check), `manifest`, `runners` (running artifacts), `int8` (quantization),
`bench` (the benchmark), `report` (Markdown and plot), `pipeline`
(`compare`: all of it in one call), `errors`.
"""

from kdkeras.deploy.bench import benchmark
from kdkeras.deploy.bench import format_results
from kdkeras.deploy.bench import write_json
from kdkeras.deploy.errors import ConversionError
from kdkeras.deploy.errors import ParityError
from kdkeras.deploy.exporter import DEFAULT_OPSET
from kdkeras.deploy.exporter import FORMATS
from kdkeras.deploy.exporter import export
from kdkeras.deploy.exporter import format_for_path
from kdkeras.deploy.exporter import gate
from kdkeras.deploy.exporter import max_onnx_opset
from kdkeras.deploy.exporter import validate_opset
from kdkeras.deploy.int8 import default_settings
from kdkeras.deploy.int8 import model_kind
from kdkeras.deploy.int8 import onnx_quantized_ops
from kdkeras.deploy.int8 import quantize
from kdkeras.deploy.int8 import quantize_tflite
from kdkeras.deploy.int8 import tflite_quantized_ops
from kdkeras.deploy.manifest import failed_path
from kdkeras.deploy.parity import DEFAULT_ATOL
from kdkeras.deploy.parity import DEFAULT_BATCH_SIZES
from kdkeras.deploy.parity import DEFAULT_RTOL
from kdkeras.deploy.parity import check_parity
from kdkeras.deploy.parity import difference_figures
from kdkeras.deploy.parity import keras_outputs
from kdkeras.deploy.parity import parity_figures
from kdkeras.deploy.pipeline import compare
from kdkeras.deploy.pipeline import export_file
from kdkeras.deploy.report import load_results
from kdkeras.deploy.report import plot_history
from kdkeras.deploy.report import write_report
from kdkeras.deploy.runners import load_keras
from kdkeras.deploy.runners import load_runner
from kdkeras.deploy.signatures import check_input_shapes
from kdkeras.deploy.signatures import input_specs

__all__ = [
    "ConversionError",
    "DEFAULT_ATOL",
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_OPSET",
    "DEFAULT_RTOL",
    "FORMATS",
    "ParityError",
    "benchmark",
    "check_input_shapes",
    "check_parity",
    "compare",
    "default_settings",
    "difference_figures",
    "export",
    "export_file",
    "failed_path",
    "format_for_path",
    "format_results",
    "gate",
    "input_specs",
    "keras_outputs",
    "load_keras",
    "load_results",
    "load_runner",
    "max_onnx_opset",
    "model_kind",
    "onnx_quantized_ops",
    "parity_figures",
    "plot_history",
    "quantize",
    "quantize_tflite",
    "tflite_quantized_ops",
    "validate_opset",
    "write_json",
    "write_report",
]
