"""Train the study's default model once: a 64-128-64-10 ReLU MLP on the digits data.

Deterministic: a fixed seed, full-batch Adam in float64, no data-dependent
randomness after the seed.  Rerunning it on the same machine reproduces
fixedpoint/data/digits_mlp.npz bit for bit (a different BLAS may change the last
bits of the float64 sums, and so the last bits of the weights).

    python scripts/train_digits_mlp.py

Saved (all float32 unless noted): ``w0 b0 w1 b1 w2 b2`` with ``w`` shaped
(inputs, outputs) so that a layer is ``x @ w + b``; ``input_scale`` (pixels are
multiplied by it, 1/16); ``test_index`` and ``train_index`` (int16): the split of
the 1797 images used for training and for the study.
"""
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent.parent / "fixedpoint" / "data"
SIZES = (64, 128, 64, 10)
SEED = 20261128
EPOCHS = 600
LR = 3e-3
WEIGHT_DECAY = 1e-4
N_TEST = 450


def forward(params, x):
    acts = [x]
    h = x
    for i in range(len(SIZES) - 1):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < len(SIZES) - 2:
            h = np.maximum(h, 0.0)
        acts.append(h)
    return acts


def main():
    d = np.load(DATA / "digits.npz")
    x_all = d["images"].astype(np.float64) / 16.0
    y_all = d["labels"].astype(np.int64)
    rng = np.random.default_rng(SEED)
    perm = rng.permutation(len(y_all))
    test_index, train_index = np.sort(perm[:N_TEST]), np.sort(perm[N_TEST:])
    x, y = x_all[train_index], y_all[train_index]
    params = {}
    for i, (k, n) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        params[f"w{i}"] = rng.standard_normal((k, n)) * np.sqrt(2.0 / k)     # He init
        params[f"b{i}"] = np.zeros(n)
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    onehot = np.eye(10)[y]
    for t in range(1, EPOCHS + 1):
        acts = forward(params, x)
        z = acts[-1] - acts[-1].max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) / len(y)                      # d(mean cross-entropy)/d(logits)
        grads = {}
        for i in reversed(range(len(SIZES) - 1)):
            grads[f"w{i}"] = acts[i].T @ g + WEIGHT_DECAY * params[f"w{i}"]
            grads[f"b{i}"] = g.sum(axis=0)
            if i:
                g = (g @ params[f"w{i}"].T) * (acts[i] > 0)
        for k in params:                               # Adam
            m[k] = 0.9 * m[k] + 0.1 * grads[k]
            v[k] = 0.999 * v[k] + 0.001 * grads[k] ** 2
            mh = m[k] / (1 - 0.9 ** t)
            vh = v[k] / (1 - 0.999 ** t)
            params[k] -= LR * mh / (np.sqrt(vh) + 1e-8)
    out = {k: val.astype(np.float32) for k, val in params.items()}

    def accuracy(idx):
        xs = (d["images"][idx].astype(np.float32) * np.float32(1 / 16))
        logits = forward(out, xs)[-1]
        return float(np.mean(np.argmax(logits, axis=1) == y_all[idx]))

    print(f"float32 accuracy: train {accuracy(train_index):.4f}, test {accuracy(test_index):.4f}")
    np.savez_compressed(DATA / "digits_mlp.npz", **out, input_scale=np.float32(1 / 16),
                        test_index=test_index.astype(np.int16), train_index=train_index.astype(np.int16))
    print(f"wrote {DATA / 'digits_mlp.npz'}")


if __name__ == "__main__":
    main()
