"""Single INT8 layers as LiteRT models, built in memory and run on each of LiteRT's kernel paths.

A test helper (not part of the package): it writes a ``.tflite`` flatbuffer with the
schema module that the ``ai-edge-litert`` wheel ships (``schema_py_generated``,
flatbuffers object API; no TensorFlow), runs it with one of the interpreter's op
resolvers and returns the output codes.  Each layer is one operator with
per-tensor int8 input and output (any zero point), int8 weights quantized per
tensor or per output channel (zero point 0, as the TFLite quantization spec
requires) and an optional int32 bias (scale ``x_scale * w_scale``, zero point 0).

Kernel paths (the op resolver that selects each):

``"xnnpack"``    ``OpResolverType.BUILTIN``: the default XNNPACK delegate runs the
                 layer; the run checks that the operator was delegated.
``"reference"``  ``OpResolverType.BUILTIN_REF``: TFLite's reference kernels.
``"optimized"``  ``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``: TFLite's
                 optimized builtin kernels (ruy GEMM for FULLY_CONNECTED and
                 CONV_2D; its own loops for DEPTHWISE_CONV_2D), no delegate.

The functions here only describe LiteRT: :func:`engine_multipliers` and
:func:`activation_range` compute the real multipliers and clamp bounds the way
the LiteRT / XNNPACK sources do (cited in each docstring), so that a test can
feed the same numbers to the code under test.
"""
from __future__ import annotations

import math

import numpy as np

PATHS = ("xnnpack", "reference", "optimized")
ACTIVATIONS = ("none", "relu", "relu_n1_to_1", "relu6")
_OPS = ("fully_connected", "conv2d", "depthwise_conv2d")


def _litert():
    """The interpreter and schema modules (imported lazily: tests call need() first)."""
    from ai_edge_litert import interpreter, schema_py_generated
    return interpreter, schema_py_generated


def _resolver(path):
    interpreter, _ = _litert()
    R = interpreter.OpResolverType
    return {"xnnpack": R.BUILTIN, "reference": R.BUILTIN_REF,
            "optimized": R.BUILTIN_WITHOUT_DEFAULT_DELEGATES}[path]


# ---------------------------------------------------------------------------
# What LiteRT computes from the float32 scales

def engine_multipliers(x_scale, w_scales, y_scale, *, op, path):
    """The real multipliers the kernel path derives from the float32 scales.

    Returns a float32 array for ``"xnnpack"`` and a float64 array otherwise,
    one value per output channel (per-tensor weights: one value).

    * XNNPACK (``src/operators/fully-connected-nc.c``, ``convolution-nhwc.c``):
      ``input_scale * kernel_scale / output_scale`` in float32 arithmetic (two
      float32 roundings).
    * TFLite per-channel weights, CONV_2D and DEPTHWISE_CONV_2D always
      (``PopulateConvolutionQuantizationParams``), and the reference
      FULLY_CONNECTED (``reference_integer_ops::FullyConnected*``):
      ``(double)input_scale * (double)filter_scale / (double)output_scale``:
      the product of two float32 values is exact in float64, the division is
      rounded once.
    * TFLite optimized FULLY_CONNECTED with per-tensor weights
      (``GetQuantizedConvolutionMultipler``):
      ``(double)(input_scale * filter_scale) / (double)output_scale``: the
      product is rounded to float32 first.
    """
    if path not in PATHS:
        raise ValueError(f"path: expected one of {PATHS}, got {path!r}")
    if op not in _OPS:
        raise ValueError(f"op: expected one of {_OPS}, got {op!r}")
    xs, ys = np.float32(x_scale), np.float32(y_scale)
    ws = np.atleast_1d(np.asarray(w_scales, np.float32))
    if path == "xnnpack":
        return (xs * ws) / ys                          # float32 throughout
    if op == "fully_connected" and path == "optimized" and ws.size == 1:
        return (xs * ws).astype(np.float64) / np.float64(ys)
    return np.float64(xs) * ws.astype(np.float64) / np.float64(ys)


def engine_methods(op, path, channels):
    """The requantization method of each output channel (a list of names).

    What the sources say and ``test_litert.py`` confirms bit for bit on x86:

    * XNNPACK: ``"float"`` (float32 rescale, nearest even) for every operator.
    * Reference kernels: FULLY_CONNECTED ``"float64"``
      (``round((double)acc * real)``); CONV_2D and DEPTHWISE_CONV_2D ``"double"``
      (``MultiplyByQuantizedMultiplier``).
    * Optimized kernels: FULLY_CONNECTED and CONV_2D go through ruy (``"ruy"``);
      DEPTHWISE_CONV_2D requantizes channels in groups of 8 with
      ``vqrdmulhq_s32`` + ``vrshlq_s32`` (``"ruy"``; on x86 through the
      NEON_2_SSE emulation the wheel is built with) and the last
      ``channels % 8`` one at a time with ``MultiplyByQuantizedMultiplier``
      (``"double"``): ``optimized_ops::Quantize``.
    """
    if path not in PATHS:
        raise ValueError(f"path: expected one of {PATHS}, got {path!r}")
    if op not in _OPS:
        raise ValueError(f"op: expected one of {_OPS}, got {op!r}")
    if path == "xnnpack":
        return ["float"] * channels
    if path == "reference":
        return ["float64" if op == "fully_connected" else "double"] * channels
    if op == "depthwise_conv2d":
        n8 = channels // 8 * 8
        return ["ruy"] * n8 + ["double"] * (channels - n8)
    return ["ruy"] * channels


def activation_range(activation, y_scale, y_zero_point):
    """``(lo, hi)`` clamp of the int8 output, as ``CalculateActivationRangeQuantized``.

    A real bound ``f`` becomes ``zero_point + round(f / scale)`` (float32
    division, ``TfLiteRound``: half away from zero), intersected with [-128, 127].
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    ys = np.float32(y_scale)

    def q(f):
        v = float(np.float32(f) / ys)
        return int(y_zero_point) + int(math.copysign(math.floor(abs(v) + 0.5), v))

    lo, hi = -128, 127
    if activation == "relu":
        lo = max(lo, q(0.0))
    elif activation == "relu6":
        lo, hi = max(lo, q(0.0)), min(hi, q(6.0))
    elif activation == "relu_n1_to_1":
        lo, hi = max(lo, q(-1.0)), min(hi, q(1.0))
    return lo, hi


def conv_output_size(size, kernel, stride, dilation, padding):
    """Output size and leading pad of one spatial axis (``ComputePaddingHeightWidth``)."""
    eff = (kernel - 1) * dilation + 1
    if padding == "SAME":
        out = (size + stride - 1) // stride
    elif padding == "VALID":
        out = (size - eff + stride) // stride
    else:
        raise ValueError(f"padding: expected 'SAME' or 'VALID', got {padding!r}")
    total = max((out - 1) * stride + eff - size, 0)
    return out, total // 2


# ---------------------------------------------------------------------------
# Model writing

class _Model:
    """One subgraph being assembled: tensors, buffers, one operator."""

    def __init__(self):
        _, self.s = _litert()
        self.tensors, self.buffers = [], [self.s.BufferT()]   # buffer 0: the empty sentinel

    def tensor(self, name, shape, ttype, scales=None, zero_points=None, axis=0, data=None):
        s = self.s
        t = s.TensorT()
        t.name, t.shape, t.type = name, list(int(d) for d in shape), ttype
        if data is not None:
            b = s.BufferT()
            b.data = np.ascontiguousarray(data, data.dtype.newbyteorder("<")).reshape(-1).view(np.uint8)
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        else:
            t.buffer = 0
        if scales is not None:
            qp = s.QuantizationParametersT()
            qp.scale = [float(v) for v in np.atleast_1d(np.asarray(scales, np.float32))]
            zps = np.zeros(len(qp.scale), np.int64) if zero_points is None else \
                np.broadcast_to(np.atleast_1d(zero_points), (len(qp.scale),))
            qp.zeroPoint = [int(v) for v in zps]
            qp.quantizedDimension = int(axis)
            t.quantization = qp
        self.tensors.append(t)
        return len(self.tensors) - 1

    def finish(self, code, options_type, options, inputs, outputs, version):
        import flatbuffers
        s = self.s
        oc = s.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, code, version
        op = s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = 0, list(inputs), list(outputs)
        op.builtinOptionsType, op.builtinOptions = options_type, options
        sg = s.SubGraphT()
        sg.tensors, sg.inputs, sg.outputs, sg.operators = self.tensors, [inputs[0]], list(outputs), [op]
        sg.name = "main"
        m = s.ModelT()
        m.version, m.operatorCodes, m.subgraphs, m.buffers = 3, [oc], [sg], self.buffers
        m.description = "fixedpoint test layer"
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def _act(activation):
    _, s = _litert()
    A = s.ActivationFunctionType
    return {"none": A.NONE, "relu": A.RELU, "relu_n1_to_1": A.RELU_N1_TO_1,
            "relu6": A.RELU6}[activation]


def _check_common(x_q, w_q, bias_q, w_scales, nout, activation):
    if x_q.dtype != np.int8 or w_q.dtype != np.int8:
        raise TypeError("x_q, w_q: expected int8 arrays")
    ws = np.atleast_1d(np.asarray(w_scales, np.float32))
    if ws.size not in (1, nout):
        raise ValueError(f"w_scales: expected 1 or {nout} scales, got {ws.size}")
    if bias_q is not None:
        bias_q = np.asarray(bias_q)
        if bias_q.dtype != np.int32 or bias_q.shape != (nout,):
            raise ValueError(f"bias_q: expected int32 of shape ({nout},)")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    return ws, bias_q


def _io_and_weights(m, x_shape, y_shape, w_q, bias_q, ws, w_axis, x_scale, x_zero_point,
                    y_scale, y_zero_point):
    s = m.s
    T = s.TensorType
    x = m.tensor("x", x_shape, T.INT8, x_scale, x_zero_point)
    w = m.tensor("w", w_q.shape, T.INT8, ws, 0, axis=w_axis if ws.size > 1 else 0, data=w_q)
    ins = [x, w]
    if bias_q is not None:
        bscale = np.float32(x_scale) * ws                  # bias scale = input scale * weight scale
        ins.append(m.tensor("b", bias_q.shape, T.INT32, bscale, 0, data=bias_q))
    else:
        ins.append(-1)
    y = m.tensor("y", y_shape, T.INT8, y_scale, y_zero_point)
    return ins, y


def fully_connected_model(w_q, bias_q, *, batch, x_scale, x_zero_point, w_scales, y_scale,
                          y_zero_point, activation="none"):
    """A FULLY_CONNECTED layer: input (batch, K), weights (N, K) (TFLite's layout)."""
    w_q = np.asarray(w_q)
    N, K = w_q.shape
    ws, bias_q = _check_common(np.zeros(0, np.int8), w_q, bias_q, w_scales, N, activation)
    m = _Model()
    s = m.s
    ins, y = _io_and_weights(m, (batch, K), (batch, N), w_q, bias_q, ws, 0, x_scale, x_zero_point,
                             y_scale, y_zero_point)
    opt = s.FullyConnectedOptionsT()
    opt.fusedActivationFunction = _act(activation)
    return m.finish(s.BuiltinOperator.FULLY_CONNECTED, s.BuiltinOptions.FullyConnectedOptions, opt,
                    ins, [y], version=5)


def conv2d_model(w_q, bias_q, *, x_shape, x_scale, x_zero_point, w_scales, y_scale, y_zero_point,
                 stride=(1, 1), padding="VALID", dilation=(1, 1), activation="none"):
    """A CONV_2D layer: input NHWC ``x_shape``, weights (O, KH, KW, C)."""
    w_q = np.asarray(w_q)
    O, KH, KW, C = w_q.shape
    ws, bias_q = _check_common(np.zeros(0, np.int8), w_q, bias_q, w_scales, O, activation)
    N, H, W, C2 = x_shape
    if C2 != C:
        raise ValueError(f"x_shape: {C2} channels, the weights have {C}")
    OH, _ = conv_output_size(H, KH, stride[0], dilation[0], padding)
    OW, _ = conv_output_size(W, KW, stride[1], dilation[1], padding)
    m = _Model()
    s = m.s
    ins, y = _io_and_weights(m, x_shape, (N, OH, OW, O), w_q, bias_q, ws, 0, x_scale, x_zero_point,
                             y_scale, y_zero_point)
    opt = s.Conv2DOptionsT()
    opt.padding = s.Padding.SAME if padding == "SAME" else s.Padding.VALID
    opt.strideH, opt.strideW = stride
    opt.dilationHFactor, opt.dilationWFactor = dilation
    opt.fusedActivationFunction = _act(activation)
    return m.finish(s.BuiltinOperator.CONV_2D, s.BuiltinOptions.Conv2DOptions, opt, ins, [y],
                    version=3)


def depthwise_conv2d_model(w_q, bias_q, *, x_shape, x_scale, x_zero_point, w_scales, y_scale,
                           y_zero_point, depth_multiplier=1, stride=(1, 1), padding="VALID",
                           dilation=(1, 1), activation="none"):
    """A DEPTHWISE_CONV_2D layer: input NHWC, weights (1, KH, KW, C * depth_multiplier)."""
    w_q = np.asarray(w_q)
    _, KH, KW, OC = w_q.shape
    ws, bias_q = _check_common(np.zeros(0, np.int8), w_q, bias_q, w_scales, OC, activation)
    N, H, W, C = x_shape
    if C * depth_multiplier != OC:
        raise ValueError(f"x_shape: {C} channels x depth_multiplier {depth_multiplier} != {OC}")
    OH, _ = conv_output_size(H, KH, stride[0], dilation[0], padding)
    OW, _ = conv_output_size(W, KW, stride[1], dilation[1], padding)
    m = _Model()
    s = m.s
    ins, y = _io_and_weights(m, x_shape, (N, OH, OW, OC), w_q, bias_q, ws, 3, x_scale,
                             x_zero_point, y_scale, y_zero_point)
    opt = s.DepthwiseConv2DOptionsT()
    opt.padding = s.Padding.SAME if padding == "SAME" else s.Padding.VALID
    opt.strideH, opt.strideW = stride
    opt.dilationHFactor, opt.dilationWFactor = dilation
    opt.depthMultiplier = depth_multiplier
    opt.fusedActivationFunction = _act(activation)
    return m.finish(s.BuiltinOperator.DEPTHWISE_CONV_2D, s.BuiltinOptions.DepthwiseConv2DOptions,
                    opt, ins, [y], version=3)


# ---------------------------------------------------------------------------
# Running

def run(model, x_q, path, *, num_threads=1):
    """Run a one-operator model on ``x_q`` (int8) with the kernel ``path``.

    Raises RuntimeError if the XNNPACK path did not delegate the operator, or
    another path did: the output would then come from a different kernel.
    """
    if path not in PATHS:
        raise ValueError(f"path: expected one of {PATHS}, got {path!r}")
    interpreter, _ = _litert()
    it = interpreter.Interpreter(model_content=model, num_threads=num_threads,
                                 experimental_op_resolver_type=_resolver(path))
    it.allocate_tensors()
    ops = [d["op_name"] for d in it._get_ops_details()]
    delegated = "DELEGATE" in ops
    if delegated != (path == "xnnpack"):
        raise RuntimeError(f"path {path!r}: operators {ops}; expected "
                           f"{'the XNNPACK delegate' if path == 'xnnpack' else 'no delegate'}")
    inp = it.get_input_details()[0]
    x_q = np.ascontiguousarray(x_q, dtype=np.int8)
    if tuple(inp["shape"]) != x_q.shape:
        raise ValueError(f"x_q: expected shape {tuple(inp['shape'])}, got {x_q.shape}")
    it.set_tensor(inp["index"], x_q)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).copy()


def fully_connected(x_q, w_q, bias_q=None, *, path, num_threads=1, **params):
    """LiteRT's output codes of a FULLY_CONNECTED layer on ``x_q`` (batch, K).

    ``params``: ``x_scale, x_zero_point, w_scales, y_scale, y_zero_point,
    activation`` as :func:`fully_connected_model`."""
    x_q = np.asarray(x_q)
    model = fully_connected_model(w_q, bias_q, batch=x_q.shape[0], **params)
    return run(model, x_q, path, num_threads=num_threads)


def conv2d(x_q, w_q, bias_q=None, *, path, num_threads=1, **params):
    """LiteRT's output codes of a CONV_2D layer on NHWC ``x_q``."""
    x_q = np.asarray(x_q)
    model = conv2d_model(w_q, bias_q, x_shape=x_q.shape, **params)
    return run(model, x_q, path, num_threads=num_threads)


def depthwise_conv2d(x_q, w_q, bias_q=None, *, path, num_threads=1, **params):
    """LiteRT's output codes of a DEPTHWISE_CONV_2D layer on NHWC ``x_q``."""
    x_q = np.asarray(x_q)
    model = depthwise_conv2d_model(w_q, bias_q, x_shape=x_q.shape, **params)
    return run(model, x_q, path, num_threads=num_threads)
