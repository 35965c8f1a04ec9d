"""Command line: ``fixedpoint study``, ``sweep``, ``profiles``, ``info`` and ``demo``.

``study`` runs the design study (see :mod:`fixedpoint.study`) and writes its
report; ``sweep`` runs a grid of models, profiles and what-if variants from a
file (see :mod:`fixedpoint.sweep`), here or on Dask (``--scheduler``);
``profiles`` lists the accelerator profiles or shows one as TOML/JSON;

``info`` says how the extension was built and which formats exist; ``demo``
computes the library's worked examples live (the design notes' INT8
multiply, the Hopper INT8 GEMM that clamps part-way, FP8 conversion edge
cases, and an FP8 GEMM against float32 accumulation).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from ._version import __version__
from . import _int
from .accumulate import Accumulator, dot
from .formats import FLOAT_FORMATS
from .fp8 import from_fp8, to_fp8
from .intops import mul, mul_wide
from .tensorcore import TensorCoreAccumulator, fp8_matmul


def _info(out) -> None:
    print(f"fixedpoint {__version__}", file=out)
    print(f"  OpenMP: {'yes' if _int.has_openmp() else 'no (serial kernels)'}", file=out)
    print("  integer formats: int2..int16, uint2..uint16 (and *_narrow)", file=out)
    print("  float formats:", file=out)
    for name in ("e5m2", "e4m3", "e4m3fnuz", "e5m2fnuz", "e3m2", "e2m3", "e2m1"):
        f = FLOAT_FORMATS[name]
        print(f"    {name:9s} bias {f.bias:2d}  max {f.max_value:<8g} min subnormal "
              f"{f.min_subnormal:<10g} inf={f.inf!s:5} nan={f.nan}", file=out)


def _demo(out) -> None:
    p = mul_wide(42, 38, "int8")
    print("INT8 x INT8 -> INT16 (the design notes' example)", file=out)
    print(f"  42 * 38 = {int(p)};  into int8: saturate {int(mul(42, 38, 'int8'))}, wrap "
          f"{int(mul(42, 38, 'int8', overflow='wrap'))};  dequantized with scales 1/2048, 1/4096: "
          f"{float(p) / 2048 / 4096!r} = 1596/8388608", file=out)

    K = 278528
    a = np.full(K, -128, np.int8)
    a[K // 2:] = 127
    b = np.full(K, -128, np.int8)
    exact = int(a.astype(np.int64) @ b.astype(np.int64))
    hop = int(dot(a, b, "int8", acc=Accumulator(32, "saturate", block=16)))
    wrp = int(dot(a, b, "int8", acc=Accumulator(32, "wrap")))
    print(f"\nHopper INT8 GEMM, K = {K}: the running sum passes 2^31 and comes back", file=out)
    print(f"  exact {exact}, wrapping register {wrp}, Hopper (saturate per block of 16) {hop}",
          file=out)

    xs = np.array([464.0, 465.0, 1e6, -np.inf, np.nan, 2.0**-10], np.float32)
    print("\nfloat32 -> E4M3: value, non-saturating (PyTorch), saturating (Hopper cvt)", file=out)
    ns, s = to_fp8(xs, "e4m3", overflow="nonfinite"), to_fp8(xs, "e4m3")
    dn, ds = from_fp8(ns, "e4m3"), from_fp8(s, "e4m3")
    for x, c1, v1, c2, v2 in zip(xs, ns, dn, s, ds):
        print(f"  {x:>12g}  0x{c1:02X} ({v1:g})   0x{c2:02X} ({v2:g})", file=out)

    rng = np.random.default_rng(0)
    A = to_fp8(rng.standard_normal((64, 4096)).astype(np.float32), "e4m3")
    B = to_fp8(rng.standard_normal((4096, 64)).astype(np.float32), "e4m3")
    hw = fp8_matmul(A, B)
    fast = fp8_matmul(A, B, acc=TensorCoreAccumulator.hopper_fp8(fast_accum=True))
    ideal = fp8_matmul(A, B, acc=TensorCoreAccumulator.exact())
    f32 = from_fp8(A) @ from_fp8(B)
    print("\nFP8 E4M3 GEMM 64x4096x64: how far each accumulation is from the exact sum", file=out)
    for name, r in (("Hopper, split (cuBLAS default)", hw), ("Hopper, fast_accum", fast),
                    ("float32 matmul", f32)):
        rel = np.abs(r.astype(np.float64) - ideal) / np.maximum(np.abs(ideal), 1e-30)
        same = np.mean(r.view(np.uint32) == ideal.view(np.uint32)) * 100
        print(f"  {name:32s} median rel. error {np.median(rel):.2e}, max {rel.max():.2e}, "
              f"{same:5.1f}% equal to the correctly rounded sum", file=out)


def _workload(args):
    from . import study
    from .models.mlp import load_data, load_mlp
    m, d = args.model, args.data
    kw = dict(seed=args.seed, limit=args.limit)
    if m in (None, "mlp"):
        if d is not None:
            raise ValueError("--data: the default MLP has its own data; give --model weights.npz "
                             "--data data.npz for a user MLP")
        return study.mlp_workload(**kw)
    if m == "minilm":
        if d is not None:
            raise ValueError("--data: MiniLM evaluates the shipped sentences; no --data")
        return study.minilm_workload(**kw, **({"batch": args.batch} if args.batch else {}))
    if m == "convnet":
        if d is not None:
            raise ValueError("--data: the conv net evaluates the shipped digits; no --data")
        return study.convnet_workload(**kw)
    if d is None:
        raise ValueError(f"--data: --model {m} needs --data (a .npz of inputs)")
    if m.endswith(".onnx"):
        return study.graph_workload(m, d, **kw, **({"batch": args.batch} if args.batch else {}))
    if m.endswith(".npz"):
        return study.mlp_workload(load_mlp(m), load_data(d), **kw)
    raise ValueError(f"--model: expected mlp, minilm, convnet, a .onnx graph or a .npz of MLP "
                     f"weights, got {m!r}")


def _study(args, out) -> int:
    from .study import format_table, run_study, write_report
    profiles = None
    if args.profiles:
        profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit: expected a positive number, got {args.limit}")
    if not args.qat and (args.epochs is not None or args.lsq):
        raise ValueError(f"{'--epochs' if args.epochs is not None else '--lsq'}: only with --qat")
    workload = _workload(args)
    schedule = _qat_schedule(args, workload) if args.qat else None
    res = run_study(profiles, workload, progress=not args.quiet, scheduler=args.scheduler)
    if schedule is not None:
        from .qat import run_qat
        run_qat(res, workload, profiles, schedule=schedule, progress=not args.quiet)
    print(format_table(res), file=out)
    paths = write_report(res, args.out, figures=not args.no_figures)
    print(f"\n{len(res['profiles'])} profiles on {res['data']['samples']} samples in "
          f"{res['seconds']:.1f} s; report: {paths[-1]}", file=out)
    for c in res["claims"]:
        print(f"  design notes, {c['class']} ({c['profile']}): claimed drop {c['claimed']}, "
              f"measured {c['measured_pp']:+.2f} pp: {c['verdict']}", file=out)
    return 0


def _sweep(args, out) -> int:
    from .sweep import format_rows, load_config, sweep
    cfg = load_config(args.config)
    res = sweep(cfg, scheduler=args.scheduler, out=args.out, table=args.table, progress=not args.quiet,
                retry_failed=args.retry_failed, figures=False if args.no_figures else None)
    print(format_rows(res.rows, cfg.columns), file=out)
    print(f"\n{len(res.rows)} cells ({res.ran} run now, {res.skipped} already in the table) in "
          f"{res.seconds:.1f} s; table: {res.table}" + "".join(f"; figure: {f}" for f in res.figures),
          file=out)
    if res.failed:
        print(f"fixedpoint sweep: {res.failed} of {len(res.rows)} cells failed (their error is in "
              f"{res.table})", file=sys.stderr)
        return 1
    return 0


def _qat_schedule(args, workload):
    """The QAT schedule, checked before the study runs (it needs torch and a training split)."""
    try:
        from .qat import Schedule
    except ImportError:
        raise ImportError('--qat: quantization-aware training needs PyTorch: pip install '
                          '"fixedpoint[torch]"') from None
    if workload.training is None:
        raise ValueError(f"--qat: {workload.name} has no labelled training split (the default MLP and "
                         f"the conv net have one)")
    kw = {} if args.epochs is None else {"epochs": args.epochs}
    if args.epochs is not None and args.epochs < 0:
        raise ValueError(f"--epochs: expected a non-negative number, got {args.epochs}")
    return Schedule(seed=args.seed, learn_scales=args.lsq, **kw)


def _profiles(args, out) -> int:
    from . import profiles
    if args.name is None:
        for n in profiles.names():
            p = profiles.get(n)
            print(f"{n:15s} {p.description}", file=out)
        return 0
    p = profiles.get(args.name)
    if args.format == "json":
        out.write(p.to_json())
    elif args.format == "toml":
        out.write(p.to_toml())
    else:
        print(p.doc, file=out)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="fixedpoint", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("study", help="run the design study and write a report")
    st.add_argument("--profiles", help="comma-separated profile names or .toml/.json files "
                    "(default: every built-in profile)")
    st.add_argument("--model", help="mlp (default), minilm, convnet, a .onnx graph (with --data: one "
                    "array per graph input, optionally labels and calib_<input>), or a .npz of MLP "
                    "weights w0, b0, ... (with --data: x, y, optionally x_calib)")
    st.add_argument("--data", help="a .npz of inputs for --model path.onnx or path.npz")
    st.add_argument("--batch", type=int, help="samples per batch for graph models")
    st.add_argument("--out", default="fixedpoint-study", help="report folder (default: %(default)s)")
    st.add_argument("--seed", type=int, default=0, help="chooses the calibration samples")
    st.add_argument("--limit", type=int, help="evaluate on the first N samples only")
    st.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    st.add_argument("--qat", action="store_true", help="also fine-tune the model under each profile "
                    "(quantization-aware training; needs the torch extra) and show PTQ and QAT columns")
    st.add_argument("--epochs", type=int, help="QAT epochs over the training split (default 8)")
    st.add_argument("--lsq", action="store_true", help="QAT with learned scales (LSQ)")
    st.add_argument("--quiet", action="store_true", help="no progress bar")
    st.add_argument("--scheduler", help="where the profiles run: none (here, default), local:N (N Dask "
                    "worker processes) or a Dask scheduler address (tcp://host:8786)")
    sw = sub.add_parser("sweep", help="run a design sweep (models x profiles x variants x seeds)")
    sw.add_argument("config", help="the sweep file (TOML; see examples/sweeps/)")
    sw.add_argument("--scheduler", help="where the cells run: none (here, default), local:N (N Dask "
                    "worker processes) or a Dask scheduler address (tcp://host:8786)")
    sw.add_argument("--out", help="output folder (default: the file's out, else sweep-NAME); a sweep "
                    "run again into the same folder resumes")
    sw.add_argument("--table", choices=("auto", "parquet", "jsonl", "csv"),
                    help="table format (default: the file's, else parquet with pyarrow, jsonl without)")
    sw.add_argument("--retry-failed", action="store_true", help="run the cells that failed again")
    sw.add_argument("--no-figures", action="store_true", help="skip sweep.png")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    pr = sub.add_parser("profiles", help="list the profiles, or show one")
    pr.add_argument("name", nargs="?", help="a profile name or a .toml/.json file")
    pr.add_argument("--format", choices=("text", "toml", "json"), default="text")
    sub.add_parser("info", help="build and format information")
    sub.add_parser("demo", help="compute the worked examples")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "study":
            return _study(args, sys.stdout)
        if args.cmd == "sweep":
            return _sweep(args, sys.stdout)
        if args.cmd == "profiles":
            return _profiles(args, sys.stdout)
        {"info": _info, "demo": _demo}[args.cmd](sys.stdout)
    except BrokenPipeError:          # e.g. piped into `head`
        sys.stderr.close()
        return 0
    except (ValueError, TypeError, OSError, ImportError) as e:
        print(f"fixedpoint {args.cmd}: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
