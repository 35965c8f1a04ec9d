"""Extract the handwritten-digits data set once into fixedpoint/data/digits.npz.

The data are the 1797 test images of the UCI "Optical Recognition of Handwritten
Digits" data set (E. Alpaydin and C. Kaynak, 1998; CC BY 4.0): 8x8 images whose
pixels count the "on" pixels of 4x4 blocks of a 32x32 bitmap (0..16).
scikit-learn ships exactly this copy as ``load_digits``; this script is the only
place that uses scikit-learn, and only to read that copy:

    pip install scikit-learn && python scripts/extract_digits.py

The package never imports scikit-learn.
"""
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

OUT = Path(__file__).resolve().parent.parent / "fixedpoint" / "data" / "digits.npz"


def main():
    d = load_digits()
    images = d.data.astype(np.uint8)            # (1797, 64), 0..16, row-major 8x8
    labels = d.target.astype(np.uint8)
    assert images.shape == (1797, 64) and images.max() == 16 and np.array_equal(images, d.data)
    np.savez_compressed(OUT, images=images, labels=labels)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
