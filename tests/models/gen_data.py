#!/usr/bin/env python3
"""Generate the digits train/test splits used by all model generators.

Writes digits_train.npz and digits_test.npz beside this script, each with
keys `x` (float32, [N,1,8,8], pixel values in [0,1]) and `y` (int64 labels).
"""
import os

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=360, random_state=0)
    np.savez_compressed(os.path.join(HERE, "digits_train.npz"), x=xtr, y=ytr)
    np.savez_compressed(os.path.join(HERE, "digits_test.npz"), x=xte, y=yte)
    print(f"train {xtr.shape} test {xte.shape}")


if __name__ == "__main__":
    main()
