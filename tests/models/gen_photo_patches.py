"""Writes photo_patches_8x8.npz: calibration data from another distribution than the
digits models were trained on (issue 13: QIL must work with such data).

`x`: 512 grayscale 8x8 patches [1, 8, 8] in [0, 1], cut at seeded random places from
scikit-image's sample photos (camera, astronaut, coffee, chelsea, rocket, page), each
photo first shrunk 4x by block averaging; darker-is-ink like the digits (inverted).
Run with scikit-image installed: `python tests/models/gen_photo_patches.py`.
"""

from pathlib import Path

import numpy as np
from skimage import color, data

here = Path(__file__).resolve().parent
rng = np.random.default_rng(13)
photos = [data.camera(), data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.page()]
patches = []
for img in photos:
    g = img.astype(np.float64)
    if g.ndim == 3:
        g = color.rgb2gray(img)
    else:
        g = g / 255.0
    h, w = (g.shape[0] // 4) * 4, (g.shape[1] // 4) * 4
    g = g[:h, :w].reshape(h // 4, 4, w // 4, 4).mean(axis=(1, 3))
    for _ in range(512 // len(photos) + 1):
        y = rng.integers(0, g.shape[0] - 8)
        x = rng.integers(0, g.shape[1] - 8)
        patches.append(1.0 - g[y : y + 8, x : x + 8])
x = np.stack(patches[:512])[:, None].astype(np.float32)
np.savez_compressed(here / "photo_patches_8x8.npz", x=x)
print(x.shape, x.min(), x.max())
