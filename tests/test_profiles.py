"""Accelerator profiles as data: files round-trip through the nested layout,
0.1 files still load (with a deprecation message), malformed files name the
field, inconsistent profiles are refused, nothing registers by side effect,
and the cost figures follow the documented formulas (computed here by hand)."""
import dataclasses
import json

import pytest

import fixedpoint as fp
from fixedpoint import profiles


@pytest.mark.parametrize("name", profiles.BUILTIN_NAMES)
@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_round_trip(name, suffix, tmp_path):
    p = profiles.get(name)
    path = tmp_path / f"p{suffix}"
    p.save(path)
    q = profiles.load(path)
    assert q == p
    assert q.doc == p.doc


def test_file_mirrors_the_dataclasses():
    d = profiles.get("edge-int4").to_dict()
    assert set(d) == {"name", "description", "weights", "activations", "accumulator", "output",
                      "vector", "activation_matmul", "cost", "notes"}
    assert d["weights"] == {"format": "int4", "granularity": "group", "group_size": 32,
                            "symmetric": True, "narrow_range": False, "calibration": "minmax",
                            "rounding": "nearest_even", "overflow": "saturate",
                            "scale_format": "float16", "static": True}
    assert d["accumulator"] == {"kind": "integer", "bits": 32, "overflow": "wrap", "block": 1}
    assert profiles.get("fp32").to_dict()["accumulator"] == {"kind": "none"}


def test_custom_formats_round_trip(tmp_path):
    e3m4 = fp.FloatFormat(3, 4, bias=5, inf=False, nan=None)
    base = profiles.get("h100-fp8")
    p = dataclasses.replace(base, name="custom-fp8", weights=fp.QuantSpec(e3m4),
                            activations=fp.QuantSpec(e3m4))
    text = p.to_toml()
    assert 'format = {kind = "float", exp_bits = 3, man_bits = 4, bias = 5' in text
    q = profiles.loads(text)
    assert q == p and q.weights.format == e3m4
    i6 = dataclasses.replace(profiles.get("h100-int8"), name="int6",
                             weights=fp.QuantSpec(fp.IntFormat(6), "channel"),
                             activations=fp.QuantSpec("int6"))
    assert profiles.loads(i6.to_json(), "json") == i6
    assert i6.to_dict()["weights"]["format"] == "int6"


def test_version_01_files_still_load_with_a_deprecation_message(data_dir):
    with pytest.warns(DeprecationWarning, match="fixedpoint 0.1 layout.*output.requantize is "
                                                "output.method"):
        p = profiles.load(data_dir / "profile_v01_ane_acc16.toml")
    assert p.name == "ane-int8-acc16"
    assert p.output.method == "double" and p.weights.rounding == "nearest_even"
    assert p.accumulator == fp.Accumulator(16, "saturate") and p.weights.narrow_range
    assert p.weights.scale_format == "float32"
    old_fp32 = ('name = "f"\n[weights]\nformat = "float32"\ngranularity = "tensor"\n'
                '[activations]\nformat = "float32"\n[output]\ntype = "float32"\n'
                '[accumulator]\nkind = "none"\n[cost]\nscale_bytes = 4\n')
    with pytest.warns(DeprecationWarning):
        f = profiles.loads(old_fp32)
    assert f.is_float and f.weights is None


def test_get_never_registers(tmp_path):
    p = dataclasses.replace(profiles.get("ane-int8"), name="my-npu-acc24",
                            accumulator=fp.Accumulator(24, "saturate"), description="24-bit what-if")
    path = tmp_path / "mine.toml"
    p.save(path)
    before = profiles.names()
    assert profiles.get(str(path)) == p
    assert profiles.names() == before and "my-npu-acc24" not in profiles.names()
    profiles.register(p)
    assert profiles.get("my-npu-acc24").accumulator.bits == 24
    with pytest.raises(ValueError, match="a different profile called 'my-npu-acc24'"):
        profiles.register(dataclasses.replace(p, description="other"))
    with pytest.raises(ValueError, match="built-in"):
        profiles.register(dataclasses.replace(profiles.get("fp32"), description="mine"))
    with pytest.raises(ValueError, match="unknown profile"):
        profiles.get("no-such-npu")


_BASE = profiles.get("edge-int4").to_toml()


@pytest.mark.parametrize("edit, field", [
    (lambda t: t.replace("group_size = 32", 'group_size = "32"'), "weights.group_size"),
    (lambda t: t.replace('format = "int4"', 'format = "int44"'), "weights.format"),
    (lambda t: t.replace('granularity = "group"', 'granularity = "row"'), "weights.granularity"),
    (lambda t: t.replace("bits = 32", "bits = 100"), "accumulator"),
    (lambda t: t.replace('kind = "integer"', 'kind = "analog"'), "accumulator"),
    (lambda t: t.replace("[cost]", "[cost]\nvolts = 1.0"), "cost.volts"),
    (lambda t: t.replace("[cost]", "[costs]"), "costs"),
    (lambda t: t.replace("mul_pj = 0.05", "mul_pj = -1.0"), "cost.mul_pj"),
    (lambda t: t.replace("symmetric = true", "symmetric = 1", 1), "weights.symmetric"),
    (lambda t: t.replace('type = "float16"', 'type = "int8"'), "output.method"),
    (lambda t: t.split("\n", 1)[1], "name"),
    (lambda t: t.replace('overflow = "wrap"', 'overflow = "explode"'), "accumulator"),
    (lambda t: t.replace("block = 1", "blocks = 1"), "accumulator"),
    (lambda t: t.replace('scale_format = "float16"', 'scale_format = "float8"'), "weights.scale_format"),
    (lambda t: t.replace('vector = "float32"', 'vector = "int8"'), "vector"),
    (lambda t: t + "\n[[weights]]\n", "TOML"),
])
def test_malformed_file_names_the_file_and_field(edit, field, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(edit(_BASE))
    with pytest.raises((ValueError, TypeError)) as e:
        profiles.load(path)
    assert field in str(e.value) and str(path) in str(e.value)


def test_malformed_json_names_the_field(tmp_path):
    d = json.loads(profiles.get("h100-fp8").to_json())
    d["accumulator"]["frac_bits"] = 99
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="accumulator.*frac_bits"):
        profiles.load(path)
    with pytest.raises(ValueError, match="path: cannot read"):
        profiles.load(tmp_path / "missing.toml")


def test_inconsistent_profiles_are_refused():
    ane, h8, f8 = profiles.get("ane-int8"), profiles.get("h100-int8"), profiles.get("h100-fp8")
    with pytest.raises(ValueError, match="accumulator: integer formats need an Accumulator"):
        dataclasses.replace(ane, accumulator=fp.TensorCoreAccumulator.hopper_fp8())
    with pytest.raises(ValueError, match="weights.granularity: float weights take"):
        dataclasses.replace(f8, weights=fp.QuantSpec("e4m3", "group", 32))
    with pytest.raises(ValueError, match="both integer or both float"):
        dataclasses.replace(h8, activations=fp.QuantSpec("e4m3"))
    with pytest.raises(ValueError, match="activations.static: per-token scales are computed per call"):
        dataclasses.replace(h8, activations=fp.QuantSpec("int8", "token"))
    with pytest.raises(ValueError, match="output.type: 'int8' output needs one weight scale per channel"):
        dataclasses.replace(profiles.get("edge-int4"), output=fp.OutputSpec("int8", "double"))
    with pytest.raises(ValueError, match="method: 'int8' output needs a requantization method"):
        fp.OutputSpec("int8")
    u8 = profiles.get("x86-avx2-u8s8")
    with pytest.raises(ValueError, match="accumulator.pair_bits: pairs of products"):
        dataclasses.replace(u8, weights=fp.QuantSpec("int8", "group", 32))
    with pytest.raises(ValueError, match="accumulator.pair_bits: pairs of products"):
        dataclasses.replace(u8, accumulator=fp.Accumulator(32, "saturate", 2, pair_bits=16))
    with pytest.raises(ValueError, match="activation_matmul: expected one of"):
        dataclasses.replace(u8, activation_matmul="int8")
    with pytest.raises(ValueError, match="narrow_range: needs a signed format and symmetric"):
        fp.QuantSpec("int8", narrow_range=True, symmetric=False)
    with pytest.raises(ValueError, match="symmetric: uint8 is unsigned"):
        fp.QuantSpec("uint8")
    with pytest.raises(ValueError, match="overflow: e2m1 has neither Inf nor NaN"):
        fp.QuantSpec("e2m1", overflow="nonfinite")
    with pytest.raises(ValueError, match="group_size: only for granularity 'group'"):
        fp.QuantSpec("int4", group_size=32)
    with pytest.raises(TypeError, match="weights: expected a QuantSpec"):
        dataclasses.replace(ane, weights="int8")


def test_costs_follow_the_documented_formulas():
    p = profiles.get("edge-int4")
    # 64 x 128 int4 codes packed (4096 B) + 2 x 128 float16 scales (512 B) + 128 int32 biases (512 B)
    assert p.weight_bytes(64, 128) == 4096 + 512 + 512
    assert p.weight_bytes(80, 128) == 80 * 128 // 2 + 3 * 128 * 2 + 512      # 3 groups, last short
    assert profiles.get("fp32").weight_bytes(64, 128) == 64 * 128 * 4 + 128 * 4
    assert profiles.get("ane-int8").weight_bytes(64, 128) == 64 * 128 + 128 * 4 + 128 * 4
    c = profiles.get("ane-int8").layer_cost(3, 64, 128)
    e = c["energy_pj"]
    assert c["macs"] == 3 * 64 * 128
    assert e["mac"] == pytest.approx(3 * 64 * 128 * (0.2 + 0.1))       # Horowitz: 8-bit mul + 32-bit add
    assert e["epilogue"] == pytest.approx(3 * 128 * 3.1)
    assert e["weights_dram"] == pytest.approx((64 * 128 + 1024) / 8 * 1300)
    assert e["activations_sram"] == pytest.approx((3 * 64 + 3 * 128) / 8 * 10)   # int8 in and out
    assert e["total"] == pytest.approx(e["mac"] + e["epilogue"] + e["weights_dram"] + e["activations_sram"])
    a = profiles.get("ane-int8").layer_cost(3, 64, 128, weights=False)
    assert a["weight_bytes"] == 0 and a["energy_pj"]["weights_dram"] == 0
    assert a["energy_pj"]["activations_sram"] == pytest.approx((3 * 64 + 64 * 128 + 3 * 128) / 8 * 10)
    r = profiles.get("h100-fp8").layer_cost(4096, 4096, 4096)["roofline_s"]
    assert r["bound"] == "compute" and r["time_s"] == pytest.approx(2 * 4096**3 / 1979e12)


def test_profiles_command_lists_and_shows(capsys):
    from fixedpoint.cli import main
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in profiles.BUILTIN_NAMES)
    assert main(["profiles", "ane-int8", "--format", "toml"]) == 0
    assert profiles.loads(capsys.readouterr().out) == profiles.get("ane-int8")
    assert main(["profiles", "edge-int4"]) == 0
    assert "Assumed (override in a profile file)" in capsys.readouterr().out
