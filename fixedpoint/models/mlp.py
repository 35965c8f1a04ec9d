"""The default model of the design study: a ReLU MLP from a ``.npz`` of weights.

The shipped one is a 64-128-64-10 MLP trained on the 1797 8x8 handwritten
digits of the UCI "optdigits" test set (``fixedpoint/data``;
``scripts/train_digits_mlp.py`` trained it, deterministically).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["MLP", "load_mlp", "load_data", "load_default", "load_digits", "DATA_DIR"]

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


@dataclass(frozen=True)
class MLP:
    """A ReLU MLP: ``layers[i] = (w, b)`` with ``w`` K x N, ``x @ w + b``; ReLU
    after every layer but the last (whose outputs are the logits)."""

    name: str
    layers: tuple

    @property
    def shapes(self):
        return [w.shape for w, _ in self.layers]

    def forward(self, x):
        """The float32 forward pass: the pre-activation output of every layer."""
        outs, h = [], np.asarray(x, np.float32)
        for i, (w, b) in enumerate(self.layers):
            z = (h @ w + b).astype(np.float32)
            outs.append(z)
            h = np.maximum(z, 0) if i < len(self.layers) - 1 else z
        return outs


def load_mlp(path) -> MLP:
    """A model from a ``.npz`` with ``w0, b0, w1, b1, ...`` (``w`` of shape K x N).

    Examples
    --------
    >>> from fixedpoint.models.mlp import DATA_DIR, load_mlp
    >>> load_mlp(DATA_DIR / "digits_mlp.npz").shapes
    [(64, 128), (128, 64), (64, 10)]
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
    return MLP(p.stem, tuple(layers))


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


def load_digits():
    """The shipped digits, scaled as the models were trained, and the split:
    ``(x, y, train_index, test_index)``."""
    m = np.load(DATA_DIR / "digits_mlp.npz")
    d = np.load(DATA_DIR / "digits.npz")
    x = d["images"].astype(np.float32) * np.float32(m["input_scale"])
    return (x, d["labels"].astype(np.int64), m["train_index"].astype(np.int64),
            m["test_index"].astype(np.int64))


def load_default():
    """The shipped digits MLP and its held-out test images: ``(model, data)``."""
    model = load_mlp(DATA_DIR / "digits_mlp.npz")
    x, y, tr, te = load_digits()
    data = {"name": f"digits ({len(te)} held-out images of 1797, UCI optdigits)",
            "x": x[te], "y": y[te], "x_calib": x[tr]}
    return MLP("digits-mlp-64-128-64-10", model.layers), data
