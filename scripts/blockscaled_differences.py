"""How often the block-scaling variants in use give different bits.

Prints the counts quoted in docs/blockscaled.md: MX scale rules against each
other, element rounding ties, and the three NVFP4 float32 operation orders, on
seeded data (Gaussian rows with log-uniform row scales, as float32 and as
bfloat16-rounded float32, which has many more exact ties).

    python scripts/blockscaled_differences.py
"""
import numpy as np

from fixedpoint import blockscaled as bs


def data(seed, rows=4096, cols=1024, bf16=False, spread=20):
    g = np.random.default_rng(seed)
    x = g.standard_normal((rows, cols)) * np.exp2(g.uniform(-spread, spread, (rows, 1)))
    x = x.astype(np.float32)
    if bf16:
        u = x.view(np.uint32)
        x = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32).view(np.float32)
    return x


def main():
    for bf16 in (False, True):
        x = data(1, bf16=bf16)
        kind = "bfloat16-valued" if bf16 else "float32"
        print(f"== {x.size} {kind} values, blocks along the last axis")
        for elem in ("e4m3", "e5m2", "e3m2", "e2m3", "e2m1", "int8"):
            rules = [r for r in sorted(bs.SCALE_RULES) if not (r == "even" and elem == "int8")]
            t = {r: bs.mx_quantize(x, elem, scale_rule=r) for r in rules}
            nb = t["floor"].scales.size
            diffs = ", ".join(f"{r} {np.count_nonzero(t[r].scales != t['floor'].scales) / nb:.1%}"
                              for r in rules if r != "floor")
            away = bs.mx_quantize(x, elem, rounding="nearest_away")
            nd = np.count_nonzero(away.codes != t["floor"].codes)
            print(f"MX {elem}: blocks whose scale differs from 'floor': {diffs}; elements "
                  f"that differ with ties away from zero: {nd} of {x.size}")
        for spread in (20, 2):
            y = data(2, bf16=bf16, spread=spread)
            ts = {a: bs.nvfp4_quantize(y, arithmetic=a) for a in sorted(bs.NVFP4_ARITHMETIC)}
            te = ts["encode_multiply"]
            for a in ("decode_reciprocal", "decode_divide"):
                s = np.count_nonzero(ts[a].scales != te.scales)
                c = np.count_nonzero(ts[a].codes != te.codes)
                dq = np.count_nonzero(ts[a].dequantize() != te.dequantize())
                print(f"NVFP4 (row scales 2^U(-{spread},{spread})) {a} vs encode_multiply: "
                      f"scales {s} of {te.scales.size}, element codes {c} of {y.size}, "
                      f"dequantized values {dq}")


if __name__ == "__main__":
    main()
