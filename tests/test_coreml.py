"""Apple's coremltools as the oracle for the ANE-style INT8 weights: its public
``linear_quantize_weights`` (mode ``linear_symmetric``, int8) runs end to end on
Linux; the ``ane-int8`` profile's weights and ``quantize(..., narrow_range=True)``
per tensor and per block must give its codes and scales bit for bit, including
an all-zero channel and one whose largest magnitude underflows the float32
scale (issue 17's fourth silent bug: Core ML keeps the scale 0)."""
import warnings

import numpy as np
import pytest

from extras import need

import fixedpoint as fp
from fixedpoint import layers

ct = need("coremltools", "pip install coremltools")


def _coreml(W, granularity, block_size=None):
    """Core ML's codes (N x K int8) and scales for a linear layer's N x K weight."""
    from coremltools.converters.mil import Builder as mb
    import coremltools.optimize.coreml as cto

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, W.shape[1]))], opset_version=ct.target.iOS18)
    def prog(x):
        return mb.linear(x=x, weight=W, name="fc")
    extra = {"block_size": block_size} if block_size else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # its own divide-by-zero and temporary-directory warnings
        m = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
                       skip_model_load=True, compute_precision=ct.precision.FLOAT32)
        cfg = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity=granularity, weight_threshold=0, **extra))
        q = cto.linear_quantize_weights(m, cfg)
    for op in q._mil_program.functions["main"].operations:
        if op.op_type == "constexpr_blockwise_shift_scale":
            return np.asarray(op.inputs["data"].val), np.asarray(op.inputs["scale"].val, np.float32)
    raise AssertionError("coremltools did not quantize the weight")


def _weights(seed):
    rng = np.random.default_rng(seed)
    W = (rng.standard_normal((12, 96)) * rng.uniform(0.01, 3, (12, 1))).astype(np.float32)
    W[3] = 0.0                              # a dead channel
    W[5] = 0.0
    W[5, 7] = 5e-44                         # max / 127 underflows float32: scale 0, code 127
    W[7, ::2] = 1.5                         # exact ties at the top: 1.5 / scale = 127
    return W


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("seed", [0, 1])
def test_ane_int8_weights_equal_coremltools_per_channel(seed):
    W = _weights(seed)
    codes, scale = _coreml(W, "per_channel")
    fc = layers.Linear("ane-int8", W.T)                    # fixedpoint takes K x N
    np.testing.assert_array_equal(fc.wq.codes.T, codes)
    np.testing.assert_array_equal(fc.wq.scale.view(np.uint32), scale.reshape(-1).view(np.uint32))
    assert fc.wq.scale[5] == 0 and fc.wq.codes[7, 5] == 127 and scale[3, 0] == 0


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("granularity,kw", [("per_tensor", {}),
                                            ("per_block", {"axis": 1, "group_size": 32})])
def test_quantize_equals_coremltools_per_tensor_and_block(granularity, kw):
    W = _weights(2)
    W[5, 7] = 1.0 if granularity == "per_tensor" else W[5, 7]
    codes, scale = _coreml(W, granularity, kw.get("group_size"))
    q = fp.quantize(W, "int8", narrow_range=True, **kw)
    np.testing.assert_array_equal(q.codes, codes)
    np.testing.assert_array_equal(np.asarray(q.scale, np.float32).reshape(-1).view(np.uint32),
                                  scale.reshape(-1).view(np.uint32))
