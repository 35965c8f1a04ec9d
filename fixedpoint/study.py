"""The design study: what a model loses, and what it saves, on each target.

:func:`run_study` runs a small MLP through the float reference and every
chosen :class:`~fixedpoint.profiles.AcceleratorProfile`, layer by layer with
:meth:`~fixedpoint.profiles.AcceleratorProfile.linear`, and measures accuracy,
the drop against float, per-layer SQNR, accumulator overflows, inputs clipped
by the activation quantizer, weight memory (codes, scales, zero points and
biases), estimated energy per inference and a roofline time per inference.
:func:`write_report` writes ``report.md``, ``results.json`` and three PNG
figures.  ``fixedpoint study`` on the command line does both.

The default model is a 64-128-64-10 ReLU MLP trained on the 1797 8x8
handwritten digits of the UCI "optdigits" test set (shipped in
``fixedpoint/data``; ``scripts/train_digits_mlp.py`` trained it).  Activation
scales are static, calibrated on training images chosen by ``seed``; layers
followed by a ReLU requantize straight to the next layer's input scale (a fused
ReLU), the last layer to its own.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .metrics import sqnr_db
from .profiles import BUILTIN_NAMES, AcceleratorProfile, get

__all__ = ["Model", "load_default", "load_model", "load_data", "run_study", "write_report",
           "format_table", "DESIGN_NOTES_CLAIMS"]

_DATA = Path(__file__).resolve().parent / "data"

#: The accuracy drops the design notes expect, in percentage points, and the
#: profiles each claim is checked against.
DESIGN_NOTES_CLAIMS = [
    ("INT8", (0.5, 1.0), ("ane-int8", "h100-int8")),
    ("INT4", (2.0, 5.0), ("edge-int4",)),
    ("INT2", (10.0, None), ("int2-research",)),
]


@dataclass(frozen=True)
class Model:
    """A ReLU MLP: ``layers[i] = (w, b)`` with ``w`` K x N, ``x @ w + b``."""

    name: str
    layers: tuple

    @property
    def shapes(self):
        return [w.shape for w, _ in self.layers]


def load_model(path) -> Model:
    """A model from a ``.npz`` with ``w0, b0, w1, b1, ...`` (``w`` of shape K x N).

    Hidden layers are followed by ReLU; the last layer's outputs are the logits.
    """
    p = Path(path)
    try:
        d = np.load(p)
    except (OSError, ValueError) as e:
        raise ValueError(f"model: cannot read {str(path)!r} as .npz: {e}") from None
    layers = []
    i = 0
    while f"w{i}" in d.files:
        w = np.asarray(d[f"w{i}"])
        b = np.asarray(d[f"b{i}"]) if f"b{i}" in d.files else np.zeros(w.shape[-1], np.float32)
        if w.ndim != 2 or w.dtype.kind != "f":
            raise ValueError(f"model: w{i} must be a 2-D float array, got shape {w.shape} dtype {w.dtype}")
        if b.shape != (w.shape[1],) or b.dtype.kind != "f":
            raise ValueError(f"model: b{i} must have shape ({w.shape[1]},) floats, got {b.shape}")
        if layers and layers[-1][0].shape[1] != w.shape[0]:
            raise ValueError(f"model: w{i} has {w.shape[0]} inputs but layer {i - 1} has "
                             f"{layers[-1][0].shape[1]} outputs")
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
            raise ValueError(f"model: layer {i} has non-finite weights")
        layers.append((w.astype(np.float32), b.astype(np.float32)))
        i += 1
    if not layers:
        raise ValueError(f"model: {str(path)!r} has no layer arrays w0, b0, ...")
    return Model(p.stem, tuple(layers))


def load_data(path) -> dict:
    """Evaluation data from a ``.npz``: ``x`` (samples x features, floats), ``y`` (integer
    labels) and optionally ``x_calib`` (calibration samples; default: ``x``)."""
    try:
        d = np.load(Path(path))
    except (OSError, ValueError) as e:
        raise ValueError(f"data: cannot read {str(path)!r} as .npz: {e}") from None
    for k in ("x", "y"):
        if k not in d.files:
            raise ValueError(f"data: {str(path)!r} has no array {k!r}")
    x = np.asarray(d["x"], np.float32)
    y = np.asarray(d["y"])
    if x.ndim != 2 or y.shape != (x.shape[0],) or y.dtype.kind not in "iu":
        raise ValueError(f"data: expected x of shape (n, features) and n integer labels y, got "
                         f"{x.shape} and {y.shape} {y.dtype}")
    xc = np.asarray(d["x_calib"], np.float32) if "x_calib" in d.files else x
    return {"name": Path(path).stem, "x": x, "y": y.astype(np.int64), "x_calib": xc}


def load_default():
    """The shipped digits model and its held-out test images: ``(model, data)``."""
    m = np.load(_DATA / "digits_mlp.npz")
    model = load_model(_DATA / "digits_mlp.npz")
    model = Model("digits-mlp-64-128-64-10", model.layers)
    d = np.load(_DATA / "digits.npz")
    scale = np.float32(m["input_scale"])
    x = d["images"].astype(np.float32) * scale
    y = d["labels"].astype(np.int64)
    te, tr = m["test_index"].astype(np.int64), m["train_index"].astype(np.int64)
    data = {"name": f"digits ({len(te)} held-out images of 1797, UCI optdigits)",
            "x": x[te], "y": y[te], "x_calib": x[tr]}
    return model, data


def _float_forward(model: Model, x):
    """Pre-activation outputs of every layer, and each layer's input."""
    ins, outs = [], []
    h = x
    for i, (w, b) in enumerate(model.layers):
        ins.append(h)
        z = (h @ w + b).astype(np.float32)
        outs.append(z)
        h = np.maximum(z, 0) if i < len(model.layers) - 1 else z
    return ins, outs


def _profile_forward(p: AcceleratorProfile, model: Model, x, scales):
    outs, traces = [], []
    h = x
    n = len(model.layers)
    for i, (w, b) in enumerate(model.layers):
        xs, xz = scales["in"][i]
        os_, oz = scales["out"][i]
        z, tr = p.linear(h, w, b, x_scale=xs, x_zero_point=xz, out_scale=os_, out_zero_point=oz,
                         weights=scales["w"][i])
        outs.append(z)
        traces.append(tr)
        h = np.maximum(z, 0) if i < n - 1 else z
    return outs, traces


def _calibrate(p: AcceleratorProfile, model: Model, x_calib):
    """Static scales: each layer's input, and (INT8 outputs) each layer's output."""
    ins, outs = _float_forward(model, x_calib)
    n = len(model.layers)
    s_in = [p.calibrate_activations(h) for h in ins]
    s_out = []
    for i in range(n):
        if p.output == "int8":
            # a layer followed by ReLU requantizes to the next layer's input scale
            s_out.append(s_in[i + 1] if i < n - 1 else p.calibrate_activations(outs[i]))
        else:
            s_out.append((None, None))
    w = [p.quantize_weights(wi, bi, s_in[i][0]) for i, (wi, bi) in enumerate(model.layers)]
    return {"in": s_in, "out": s_out, "w": w}


class _Progress:
    def __init__(self, total, stream, enabled):
        self.total, self.done, self.stream, self.enabled = total, 0, stream, enabled
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.t0 = time.perf_counter()

    def step(self, label):
        self.done += 1
        if not self.enabled:
            return
        width = 28
        fill = int(width * self.done / self.total)
        line = (f"[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} "
                f"{label:<16s} {time.perf_counter() - self.t0:5.1f} s")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if self.done == self.total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def run_study(profiles=None, model: Model | None = None, data: dict | None = None, *, seed: int = 0,
              n_calib: int = 256, limit: int | None = None, progress: bool = False,
              stream=None) -> dict:
    """Run the float reference and each profile over ``data``; return the results.

    Parameters
    ----------
    profiles : list of names, file paths or AcceleratorProfile, optional
        Default: every built-in profile.  ``fp32`` is always run (the reference).
    model, data : optional
        Default: :func:`load_default`.
    seed : int
        Chooses the ``n_calib`` calibration samples.
    limit : int, optional
        Evaluate on the first ``limit`` samples only.
    progress : bool
        Draw a progress bar on ``stream`` (default stderr).

    Returns
    -------
    dict (JSON-serializable): ``profiles[name]`` holds ``accuracy``,
    ``drop_pp``, ``sqnr_db`` (per layer), ``overflows`` and ``clipped_inputs``
    (per layer, over the evaluation set), ``weight_bytes``,
    ``energy_nj_per_inference``, ``time_ns_per_inference`` and its bound.
    The raw per-layer errors for the figures are in ``_arrays`` (not JSON).

    Examples
    --------
    >>> from fixedpoint import study
    >>> res = study.run_study(["ane-int8"], limit=100)
    >>> list(res["profiles"]), res["profiles"]["ane-int8"]["weight_bytes"]
    (['fp32', 'ane-int8'], 18640)
    >>> print(study.format_table(res).splitlines()[0])
    profile   accuracy %  drop pp  SQNR dB per layer  overflows  clipped  weights B  energy nJ  time ns
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    if model is None and data is None:
        model, data = load_default()
    elif model is None or data is None:
        raise ValueError("model and data: give both, or neither for the default")
    chosen = list(BUILTIN_NAMES) if profiles is None else list(profiles)
    if not chosen:
        raise ValueError("profiles: expected at least one profile")
    plist = [get(p) for p in chosen]
    if "fp32" not in [p.name for p in plist]:
        plist.insert(0, get("fp32"))
    else:
        plist.sort(key=lambda p: p.name != "fp32")
    x, y = data["x"], data["y"]
    k_in = model.layers[0][0].shape[0]
    if x.ndim != 2 or x.shape[1] != k_in:
        raise ValueError(f"data: x has shape {x.shape}, the model takes {k_in} features")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
            raise ValueError(f"limit: expected a positive int, got {limit!r}")
        x, y = x[:limit], y[:limit]
    rng = np.random.default_rng(seed)
    xc = data["x_calib"]
    xc = xc[np.sort(rng.choice(len(xc), size=min(n_calib, len(xc)), replace=False))]
    bar = _Progress(len(plist), stream or sys.stderr, progress)
    t0 = time.perf_counter()
    _, ref_outs = _float_forward(model, x)
    results = {}
    arrays = {"ref": ref_outs}
    ref_acc = None
    for p in plist:
        try:
            scales = _calibrate(p, model, xc)
            outs, traces = _profile_forward(p, model, x, scales)
        except ValueError as e:
            raise ValueError(f"profile {p.name!r} cannot run this model: {e}") from None
        acc = float(np.mean(np.argmax(outs[-1], axis=1) == y))
        if p.name == "fp32":
            ref_acc = acc
        shapes = model.shapes
        energy = sum(p.energy_pj(k, n)["total"] for k, n in shapes)
        roof = [p.roofline_s(k, n) for k, n in shapes]
        t = sum(r["time_s"] for r in roof)
        bound = "memory" if sum(r["memory_s"] for r in roof) >= sum(r["compute_s"] for r in roof) \
            else "compute"
        results[p.name] = {
            "description": p.description,
            "accuracy": acc,
            "drop_pp": round((ref_acc - acc) * 100, 6),
            "sqnr_db": [_finite(sqnr_db(r, o)) for r, o in zip(ref_outs, outs)],
            "overflows": [tr.overflow_count for tr in traces],
            "clipped_inputs": [tr.clipped_inputs for tr in traces],
            "weight_bytes": int(sum(p.weight_bytes(k, n) for k, n in shapes)),
            "energy_nj_per_inference": energy / 1e3,
            "time_ns_per_inference": t * 1e9,
            "bound": bound,
        }
        arrays[p.name] = {"outs": outs, "w": scales["w"]}
        bar.step(p.name)
    return {
        "fixedpoint": __version__,
        "model": {"name": model.name, "layers": [list(s) for s in model.shapes]},
        "data": {"name": data.get("name", "user data"), "samples": int(len(y)),
                 "calibration_samples": int(len(xc))},
        "seed": int(seed),
        "seconds": time.perf_counter() - t0,
        "profiles": results,
        "claims": _claims(results),
        "_arrays": arrays,
        "_model": model,
    }


def _finite(v):
    return None if not np.isfinite(v) else float(v)


def _claims(results):
    out = []
    for label, (lo, hi), names in DESIGN_NOTES_CLAIMS:
        for n in names:
            if n not in results:
                continue
            d = results[n]["drop_pp"]
            if d < lo:
                verdict = "smaller"
            elif hi is not None and d > hi:
                verdict = "larger"
            else:
                verdict = "within"
            claim = f"{lo:g}-{hi:g} pp" if hi is not None else f">= {lo:g} pp"
            out.append({"class": label, "profile": n, "claimed": claim, "measured_pp": d,
                        "verdict": verdict})
    return out


# ---------------------------------------------------------------------------
# Output

_COLUMNS = [("profile", "{}"), ("accuracy %", "{:.2f}"), ("drop pp", "{:+.2f}"),
            ("SQNR dB per layer", "{}"), ("overflows", "{}"), ("clipped", "{}"),
            ("weights B", "{}"), ("energy nJ", "{:.1f}"), ("time ns", "{:.2f}")]


def _row(name, r):
    sq = "/".join("inf" if v is None else f"{v:.1f}" for v in r["sqnr_db"])
    vals = [name, r["accuracy"] * 100, r["drop_pp"], sq, sum(r["overflows"]),
            sum(r["clipped_inputs"]), r["weight_bytes"], r["energy_nj_per_inference"],
            r["time_ns_per_inference"]]
    return [fmt.format(v) for (_, fmt), v in zip(_COLUMNS, vals)]


def format_table(results: dict, markdown: bool = False) -> str:
    """The results as an aligned text table (or a Markdown table)."""
    rows = [[c for c, _ in _COLUMNS]] + [_row(n, r) for n, r in results["profiles"].items()]
    if markdown:
        out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows[1:]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _json_ready(results):
    return {k: v for k, v in results.items() if not k.startswith("_")}


def write_report(results: dict, out, *, figures: bool = True) -> list:
    """Write ``report.md``, ``results.json`` and (``figures``) three PNGs into ``out``.

    Returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    j = out / "results.json"
    j.write_text(json.dumps(_json_ready(results), indent=2) + "\n", encoding="utf-8")
    paths.append(j)
    figs = _figures(results, out) if figures else []
    paths += figs
    md = out / "report.md"
    md.write_text(_markdown(results, [f.name for f in figs]), encoding="utf-8")
    paths.append(md)
    return paths


def _markdown(results, figs):
    m, d = results["model"], results["data"]
    lines = [
        "# fixedpoint design study", "",
        f"fixedpoint {results['fixedpoint']}; model {m['name']} (layers "
        f"{', '.join('x'.join(map(str, s)) for s in m['layers'])}); data: {d['name']}, "
        f"{d['samples']} samples evaluated; static activation scales from {d['calibration_samples']} "
        f"calibration samples (seed {results['seed']}); {results['seconds']:.1f} s.", "",
        format_table(results, markdown=True), "",
        "Accuracy drop in percentage points against the fp32 profile.  SQNR: each layer's output "
        "against the float model's, over the evaluation set (the errors of earlier layers included). "
        "Overflows: accumulator adds that wrapped or clamped; clipped: inputs beyond the activation "
        "format at the static scale.  Weights: codes, scales, zero points and biases in bytes.  "
        "Energy and time per inference (batch 1) are estimates from each profile's cost figures: "
        "see `fixedpoint profiles NAME` for their sources and assumptions.", "",
        "## Against the design notes", "",
        "| class | profile | claimed drop | measured drop (pp) | verdict |", "|---|---|---|---|---|",
    ]
    for c in results["claims"]:
        lines.append(f"| {c['class']} | {c['profile']} | {c['claimed']} | {c['measured_pp']:+.2f} | "
                     f"{c['verdict']} |")
    n = d["samples"]
    lines += ["", f"One sample is {100 / n:.2f} pp of accuracy here.", ""]
    for f in figs:
        lines += [f"![{f}]({f})", ""]
    return "\n".join(lines)


def _figures(results, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        raise ImportError("the study's figures need matplotlib (pip install matplotlib), or pass "
                          "figures=False / --no-figures") from None
    prof = results["profiles"]
    arrays = results["_arrays"]
    names = list(prof)
    paths = []

    fig, ax = plt.subplots(figsize=(8, 3.6))
    acc = [prof[n]["accuracy"] * 100 for n in names]
    ax.bar(range(len(names)), acc, color=["#777777" if n == "fp32" else "#3b6ea8" for n in names])
    ax.axhline(prof["fp32"]["accuracy"] * 100, color="k", lw=0.8, ls="--", label="fp32")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    lo = max(0.0, min(acc) - 5)
    ax.set_ylim(lo, 100)
    ax.set_ylabel("accuracy (%)")
    for i, a in enumerate(acc):
        ax.text(i, a + 0.3, f"{a:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_title("Accuracy per profile")
    fig.tight_layout()
    paths.append(_save(fig, out / "accuracy.png", plt))

    ref = arrays["ref"]
    nl = len(ref)
    fig, axes = plt.subplots(1, nl, figsize=(4 * nl, 3.4), squeeze=False)
    for li in range(nl):
        ax = axes[0, li]
        for n in names:
            if n == "fp32":
                continue
            e = (arrays[n]["outs"][li].astype(np.float64) - ref[li]).ravel()
            scale = np.abs(ref[li]).max() or 1.0
            ax.hist(e / scale, bins=80, histtype="step", label=n, log=True)
        ax.set_title(f"layer {li}: error / max|float output|")
        ax.set_xlabel("relative error")
    axes[0, 0].set_ylabel("count")
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    paths.append(_save(fig, out / "errors.png", plt))

    model = results["_model"]
    w = model.layers[min(1, len(model.layers) - 1)][0]
    col = w[:, 0]
    shown = [n for n in names if n != "fp32"]
    fig, axes = plt.subplots(len(shown), 1, figsize=(8, 1.3 * len(shown) + 1), sharex=True, squeeze=False)
    for ax, n in zip(axes[:, 0], shown):
        ax.hist(col, bins=60, color="#aaaaaa")
        q = arrays[n]["w"][min(1, len(model.layers) - 1)]
        grid = _grid_for_column(q, col.shape[0])
        span = col.max() - col.min()
        grid = grid[(grid >= col.min() - 0.1 * span) & (grid <= col.max() + 0.1 * span)]
        for g in grid:
            ax.axvline(g, color="#c0392b", lw=0.5, alpha=0.7)
        ax.set_ylabel(n, rotation=0, ha="right", fontsize=8)
        ax.set_yticks([])
    axes[-1, 0].set_xlabel("weight value (layer 1, output channel 0); red: the values the format can hold")
    fig.suptitle("Weights and each profile's quantization grid")
    fig.tight_layout()
    paths.append(_save(fig, out / "weights.png", plt))
    return paths


def _grid_for_column(q, k):
    """Representable values for output channel 0 (its first group for per-group scales)."""
    from .formats import FloatFormat
    from .fp8 import from_fp8
    f = q.fmt
    sc = np.asarray(q.scale, np.float64)
    zp = np.asarray(q.zero_point)
    if sc.ndim == 1:
        s, z = sc[0], zp.reshape(-1)[0] if zp.ndim else zp
    elif sc.ndim == 2:
        s, z = sc[0, 0], zp[0, 0] if zp.ndim == 2 else zp
    else:
        s, z = float(sc), zp
    if isinstance(f, FloatFormat):
        codes = np.arange(256, dtype=np.uint8)
        v = from_fp8(codes, f).astype(np.float64)
        v = v[np.isfinite(v)]
        return np.unique(v * s)
    return (np.arange(f.min, f.max + 1) - int(z)) * s


def _save(fig, path, plt):
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
