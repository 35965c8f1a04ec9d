"""fixedpoint: bit-exact emulation of the low-precision arithmetic of AI accelerators.

Integer formats with explicit overflow (``saturate``/``wrap``), matrix
products through accumulators of any width, FP8 conversion that matches
Hopper hardware and PyTorch bit for bit, and the Hopper FP8 tensor-core
accumulation.  See the README for the semantics table.
"""
from ._version import __version__
from ._checks import get_num_threads, set_num_threads
from .formats import FloatFormat, IntFormat
from .fp8 import FloatCodes, as_ml_dtypes, from_fp8, to_fp8
from .intops import add, mul, mul_wide, saturate, wrap
from .accumulate import Accumulator, dot, gemm_path, matmul
from .tensorcore import TensorCoreAccumulator, fp8_matmul
from .blockscaled import (BlockScaledMMA, MXTensor, NVFP4Tensor, blockscaled_matmul, from_e8m0,
                          mx_quantize, nvfp4_quantize, to_e8m0)
from .calibrate import Calibrator, DelayedScaling
from .quantization import QTensor, dequantize, fake_quant, quantize
from .requant import qlinear, quantize_multiplier, requantize, requantize_with_values
from . import metrics
from . import rtl
from . import profiles
from .profiles import AcceleratorProfile, QuantSpec, OutputSpec, CostModel
from . import layers
from .layers import LayerTrace

__all__ = [
    "IntFormat", "FloatFormat",
    "saturate", "wrap", "mul", "mul_wide", "add",
    "Accumulator", "matmul", "dot", "gemm_path",
    "FloatCodes", "to_fp8", "from_fp8", "as_ml_dtypes",
    "TensorCoreAccumulator", "fp8_matmul",
    "to_e8m0", "from_e8m0", "MXTensor", "mx_quantize", "NVFP4Tensor", "nvfp4_quantize",
    "blockscaled_matmul", "BlockScaledMMA",
    "quantize_multiplier", "requantize", "requantize_with_values", "qlinear",
    "QTensor", "quantize", "dequantize", "fake_quant", "metrics",
    "Calibrator", "DelayedScaling",
    "set_num_threads", "get_num_threads",
    "rtl", "profiles", "AcceleratorProfile", "QuantSpec", "OutputSpec", "CostModel",
    "layers", "LayerTrace",
]
