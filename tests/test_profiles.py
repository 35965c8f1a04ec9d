"""Accelerator profiles: linear() is the documented composition of the public
primitives, bit for bit; profile files round-trip; malformed files name the field."""
import dataclasses
import json

import ml_dtypes
import numpy as np
import pytest

import fixedpoint as fp
from fixedpoint import profiles


def _layer(seed, m=7, k=96, n=24, dead=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k)).astype(np.float32)
    x[0, 0] = 9.0                       # an outlier that sets the per-tensor scale
    w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    if dead:
        w[:, 3] = 1e-12                 # a dead channel: its bias alone decides the output
    return x, w, b


def _bf16(y):
    return y.astype(ml_dtypes.bfloat16).astype(np.float32)      # ml_dtypes: round to nearest even


def _same(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ["h100-fp8", "h100-fp8-fast", "h100-fp8-e5m2"])
def test_fp8_profiles_compose(name, seed):
    p = profiles.get(name)
    x, w, b = _layer(seed, k=256)
    y, tr = p.linear(x, w, b)
    xq = fp.quantize(x, p.activation_format, saturate=True)
    wq = fp.quantize(w, p.weight_format, saturate=True)
    acc = fp.fp8_matmul(xq.codes, wq.codes, p.activation_format, p.weight_format, scale_a=xq.scale,
                        scale_b=wq.scale, fast_accum=name.endswith("fast"))
    _same(y, _bf16(acc + b))
    _same(tr.accumulator, acc)
    np.testing.assert_array_equal(tr.x.codes, xq.codes)
    np.testing.assert_array_equal(tr.w.codes, wq.codes)


def test_fp8_profile_with_static_scale_counts_clipping():
    p = profiles.get("h100-fp8")
    x, w, b = _layer(3)
    s = np.float32(1 / 448)             # x / s beyond 448 for every |x| > 1
    y, tr = p.linear(x, w, b, x_scale=s)
    assert tr.clipped_inputs == int(np.count_nonzero(np.abs(x) * 448 > 448))
    xq = fp.quantize(x, "e4m3", scale=s, saturate=True)
    np.testing.assert_array_equal(tr.x.codes, xq.codes)
    assert np.all(np.abs(fp.from_fp8(xq.codes, "e4m3")) <= 448)


@pytest.mark.parametrize("seed", [0, 1])
def test_ane_int8_composes(seed):
    p = profiles.get("ane-int8")
    x, w, b = _layer(seed, dead=True)
    y, tr = p.linear(x, w, b)
    xq = fp.quantize(x, "int8")
    wq = fp.quantize(w, "int8", axis=1, narrow_range=True)
    # the dead channel's weight scale is raised until its bias fits in 2^30 (TFLite's rule)
    need = np.abs(b.astype(np.float64)) / (np.float64(xq.scale) * 2.0**30)
    sw = np.maximum(wq.scale.astype(np.float64), need).astype(np.float32)
    assert sw[3] > wq.scale[3]
    wq = fp.quantize(w, "int8", scale=sw, axis=1, narrow_range=True)
    s = (np.float32(xq.scale) * wq.scale).astype(np.float32)
    bq = np.rint(b.astype(np.float64) / s).astype(np.int64)
    acc = fp.matmul(xq.codes, wq.codes, "int8", fp.Accumulator(32, "wrap"), c=bq)
    oq = fp.quantize(acc * s.astype(np.float64), "int8")
    m, sh = fp.quantize_multiplier(s.astype(np.float64) / np.float64(oq.scale))
    codes = fp.requantize(acc, m, sh, fmt="int8")
    # qlinear is a second, independent composition of the same pipeline
    np.testing.assert_array_equal(codes, fp.qlinear(xq.codes, wq.codes, bq, multiplier=m, shift=sh))
    np.testing.assert_array_equal(tr.output_codes, codes)
    np.testing.assert_array_equal(tr.accumulator, acc)
    _same(y, codes.astype(np.float32) * np.float32(oq.scale))
    assert abs(y[1, 3] - b[3]) <= oq.scale          # the dead channel keeps its bias


def test_ane_int8_static_scales_and_asymmetric_activations():
    p = dataclasses.replace(profiles.get("ane-int8"), name="ane-asym", activation_symmetric=False,
                            requantize="single")
    x, w, b = _layer(5)
    x = np.abs(x)
    xs, xz = np.float32(0.04), -128
    so, zo = np.float32(0.1), -3
    y, tr = p.linear(x, w, b, x_scale=xs, x_zero_point=xz, out_scale=so, out_zero_point=zo)
    xq = fp.quantize(x, "int8", scale=xs, zero_point=np.int32(xz))
    wq = fp.quantize(w, "int8", axis=1, narrow_range=True)
    s = (xs * wq.scale).astype(np.float32)
    bq = np.rint(b.astype(np.float64) / s).astype(np.int64)
    acc = fp.matmul(xq.codes.astype(np.int16) + 128, wq.codes.astype(np.int16), "int9",
                    fp.Accumulator(32, "wrap"), c=bq)
    m, sh = fp.quantize_multiplier(s.astype(np.float64) / np.float64(so))
    codes = fp.requantize(acc, m, sh, zero_point=zo, fmt="int8", rounding="single")
    np.testing.assert_array_equal(tr.output_codes, codes)
    _same(y, (codes.astype(np.float32) - np.float32(zo)) * so)
    assert tr.clipped_inputs == int(np.count_nonzero(x / xs - 128 > 127.5))


@pytest.mark.parametrize("seed", [0, 1])
def test_h100_int8_composes(seed):
    p = profiles.get("h100-int8")
    x, w, b = _layer(seed)
    y, tr = p.linear(x, w, b)
    xq = fp.quantize(x, "int8")
    wq = fp.quantize(w, "int8", axis=1, narrow_range=True)
    acc, ov = fp.matmul(xq.codes, wq.codes, "int8", fp.Accumulator(32, "saturate", block=16),
                        return_overflow=True)
    s = (np.float32(xq.scale) * wq.scale).astype(np.float32)
    _same(y, _bf16(acc.astype(np.float32) * s + b))
    np.testing.assert_array_equal(tr.overflow, ov)


def test_narrow_accumulator_overflows_are_counted():
    p = dataclasses.replace(profiles.get("h100-int8"), name="acc16",
                            accumulator=fp.Accumulator(16, "saturate"))
    rng = np.random.default_rng(9)
    x = np.abs(rng.standard_normal((4, 512))).astype(np.float32)
    w = np.abs(rng.standard_normal((512, 8))).astype(np.float32)
    y, tr = p.linear(x, w)
    xq, wq = fp.quantize(x, "int8"), fp.quantize(w, "int8", axis=1, narrow_range=True)
    acc, ov = fp.matmul(xq.codes, wq.codes, "int8", fp.Accumulator(16, "saturate"), return_overflow=True)
    assert tr.overflow_count == int(ov.sum()) > 0
    assert np.all(tr.accumulator == 32767)


@pytest.mark.parametrize("name", ["edge-int4", "int2-research"])
def test_grouped_profiles_compose(name):
    p = profiles.get(name)
    x, w, b = _layer(4, k=128)
    y, tr = p.linear(x, w, b)
    g = p.weight_group_size
    xq = fp.quantize(x, "int8")
    wq = fp.quantize(w, p.weight_format, axis=0, group_size=g, narrow_range=p.weight_narrow_range)
    total = None
    for j in range(128 // g):
        a = fp.matmul(xq.codes[:, j * g:(j + 1) * g], wq.codes[j * g:(j + 1) * g], "int8")
        part = a.astype(np.float32) * (np.float32(xq.scale) * wq.scale[j]).astype(np.float32)
        total = part if total is None else total + part
    want = total + b
    if p.output == "float16":
        want = want.astype(np.float16).astype(np.float32)
    _same(y, want)
    assert tr.overflow_count == 0
    if name == "int2-research":
        assert set(np.unique(tr.w.codes)) <= {-1, 0, 1}


def test_fp32_profile_is_numpy():
    x, w, b = _layer(0)
    y, tr = profiles.get("fp32").linear(x, w, b)
    _same(y, x @ w + b)
    assert tr.overflow_count == 0 and tr.x is None


def test_linear_batched_and_prequantized_weights():
    p = profiles.get("edge-int4")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 64)).astype(np.float32)
    w = rng.standard_normal((64, 5)).astype(np.float32)
    y, _ = p.linear(x, w)
    y2, _ = p.linear(x, None, weights=p.quantize_weights(w))
    assert y.shape == (2, 3, 5)
    _same(y, y2)


def test_linear_bad_input():
    p = profiles.get("ane-int8")
    x, w, b = _layer(0)
    with pytest.raises(ValueError, match="x: expected shape"):
        p.linear(x[:, :5], w)
    with pytest.raises(TypeError, match="x: expected floats"):
        p.linear(x.astype(np.int32), w)
    with pytest.raises(ValueError, match="bias"):
        p.linear(x, w, b[:3])
    with pytest.raises(ValueError, match="w: expected a K x N"):
        p.linear(x, w[0])
    with pytest.raises(ValueError, match="non-finite"):
        p.linear(np.full_like(x, np.nan), w)
    with pytest.raises(ValueError, match="group size 32 does not divide"):
        profiles.get("edge-int4").linear(x[:, :40], w[:40])


# -- costs --------------------------------------------------------------------

def test_weight_bytes_and_energy_follow_the_documented_formulas():
    p = profiles.get("edge-int4")
    # 64 x 128 int4 codes packed (4096 B) + 2 x 128 float16 scales (512 B) + 128 int32 biases (512 B)
    assert p.weight_bytes(64, 128) == 4096 + 512 + 512
    assert profiles.get("fp32").weight_bytes(64, 128) == 64 * 128 * 4 + 128 * 4
    assert profiles.get("ane-int8").weight_bytes(64, 128) == 64 * 128 + 128 * 4 + 128 * 4
    e = profiles.get("ane-int8").energy_pj(64, 128)
    assert e["mac"] == pytest.approx(64 * 128 * (0.2 + 0.1))            # Horowitz: 8-bit mul + 32-bit add
    assert e["weights_dram"] == pytest.approx((64 * 128 + 1024) / 8 * 1300)
    assert e["total"] == pytest.approx(sum(v for k, v in e.items() if k != "total"))
    r = profiles.get("h100-fp8").roofline_s(4096, 4096, batch=4096)
    assert r["bound"] == "compute" and r["time_s"] == pytest.approx(2 * 4096**3 / 1979e12)


# -- files --------------------------------------------------------------------

@pytest.mark.parametrize("name", profiles.BUILTIN_NAMES)
@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_round_trip(name, suffix, tmp_path):
    p = profiles.get(name)
    path = tmp_path / f"p{suffix}"
    p.save(path)
    q = profiles.load(path, register_it=False)
    assert q == p
    assert q.doc == p.doc


def test_user_file_registers(tmp_path):
    p = dataclasses.replace(profiles.get("ane-int8"), name="my-npu-acc24",
                            accumulator=fp.Accumulator(24, "saturate"), description="24-bit what-if")
    path = tmp_path / "mine.toml"
    p.save(path)
    assert profiles.get(str(path)) == p
    assert "my-npu-acc24" in profiles.names()
    assert profiles.get("my-npu-acc24").accumulator.bits == 24
    with pytest.raises(ValueError, match="built-in"):
        profiles.register(dataclasses.replace(p, name="fp32", accumulator=None, weight_format="float32",
                                              activation_format="float32", output="float32",
                                              requantize=None, weight_narrow_range=False))
    with pytest.raises(ValueError, match="unknown profile"):
        profiles.get("no-such-npu")


_BASE = profiles.get("edge-int4").to_toml()


@pytest.mark.parametrize("edit, field", [
    (lambda t: t.replace("group_size = 32", 'group_size = "32"'), "weights.group_size"),
    (lambda t: t.replace('format = "int4"', 'format = "int44"'), "weights.format"),
    (lambda t: t.replace("granularity = \"group\"", "granularity = \"row\""), "weights.granularity"),
    (lambda t: t.replace("bits = 32", "bits = 100"), "bits"),
    (lambda t: t.replace("kind = \"integer\"", "kind = \"analog\""), "accumulator.kind"),
    (lambda t: t.replace("[cost]", "[cost]\nvolts = 1.0"), "cost.volts"),
    (lambda t: t.replace("[cost]", "[costs]"), "[costs]"),
    (lambda t: t.replace("mul_pj = 0.05", "mul_pj = -1.0"), "cost.mul_pj"),
    (lambda t: t.replace("symmetric = true", "symmetric = 1", 1), "weights.symmetric"),
    (lambda t: t.replace('type = "float16"', 'type = "int8"'), "output.type"),
    (lambda t: t.split("\n", 1)[1], "name"),
    (lambda t: t.replace("overflow = \"wrap\"", "overflow = \"explode\""), "overflow"),
    (lambda t: t.replace("block = 1", "blocks = 1"), "accumulator.blocks"),
    (lambda t: t + "\n[[weights]]\n", "TOML"),
])
def test_malformed_file_names_the_field(edit, field, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(edit(_BASE))
    with pytest.raises((ValueError, TypeError)) as e:
        profiles.load(path, register_it=False)
    assert field in str(e.value)
    assert str(path) in str(e.value)


def test_malformed_json_names_the_field(tmp_path):
    d = json.loads(profiles.get("h100-fp8").to_json())
    d["accumulator"]["frac_bits"] = 99
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="frac_bits"):
        profiles.load(path, register_it=False)


def test_inconsistent_profiles_are_refused():
    base = profiles.get("ane-int8")
    with pytest.raises(ValueError, match="accumulator"):
        dataclasses.replace(base, accumulator=fp.TensorCoreAccumulator.hopper_fp8())
    with pytest.raises(ValueError, match="FP8 weights take"):
        dataclasses.replace(profiles.get("h100-fp8"), weight_granularity="group", weight_group_size=32)
    with pytest.raises(ValueError, match="requantize"):
        dataclasses.replace(profiles.get("h100-int8"), requantize="double")
    with pytest.raises(ValueError, match="both integer or both FP8"):
        dataclasses.replace(profiles.get("h100-int8"), activation_format="e4m3")


def test_grouped_profile_with_a_narrow_accumulator_counts_overflows():
    p = dataclasses.replace(profiles.get("edge-int4"), name="edge-acc8",
                            accumulator=fp.Accumulator(8, "saturate"))
    rng = np.random.default_rng(12)
    x = np.abs(rng.standard_normal((5, 64))).astype(np.float32)
    w = np.abs(rng.standard_normal((64, 7))).astype(np.float32)
    y, tr = p.linear(x, w)
    xq = fp.quantize(x, "int8")
    wq = fp.quantize(w, "int4", axis=0, group_size=32)
    total, counts = None, 0
    for j in range(2):
        a, n = fp.matmul(xq.codes[:, 32 * j:32 * (j + 1)], wq.codes[32 * j:32 * (j + 1)], "int8",
                         fp.Accumulator(8, "saturate"), return_overflow=True)
        part = a.astype(np.float32) * (np.float32(xq.scale) * wq.scale[j]).astype(np.float32)
        total = part if total is None else total + part
        counts = counts + n
    _same(y, total.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(tr.overflow, counts)
    assert tr.overflow_count > 0 and np.all(np.abs(tr.accumulator) <= 127)
