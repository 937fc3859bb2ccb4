"""Real inputs for the PP-OCR tests (compiler/tests/real_models.rs), from scikit-image's
sample images, stored as uint8 RGB in channel-first order (the test normalises them):

- det_x: the page scan at 128x128; det_calib: five photos at 128x128;
- rec_x / rec_calib: text-line crops of the page scan and the text image at 48x320
  (height 48, width by aspect ratio up to 320, zero padding), alternating between the two;
- cls_x / cls_calib: the same crops at 48x192.

    /work/venv/bin/python tests/models/gen_ocr_inputs.py   # writes tests/models/ocr_inputs.npz
"""

from pathlib import Path

import numpy as np
from skimage import color, data, transform


def rgb(img):
    img = img.astype(np.float64)
    if img.max() > 1.5:
        img = img / 255.0
    return color.gray2rgb(img) if img.ndim == 2 else img[..., :3]


def square(img, n=128):
    return transform.resize(rgb(img), (n, n), anti_aliasing=True)


def line_crops(img, rows=48):
    g = rgb(img).mean(axis=2)
    ink = (g < 0.5).mean(axis=1) if g.mean() > 0.5 else (g > 0.5).mean(axis=1)
    crops, y = [], 0
    while y + rows // 2 <= g.shape[0]:
        if ink[y : y + rows // 2].sum() > 0.5:
            crops.append(rgb(img)[max(0, y - rows // 4) : y + rows // 2 + rows // 4])
            y += rows // 2
        y += rows // 4
    return crops


def line(crop, w, h=48):
    rw = min(w, max(8, int(np.ceil(h * crop.shape[1] / crop.shape[0]))))
    out = np.zeros((h, w, 3))
    out[:, :rw] = transform.resize(crop, (h, rw), anti_aliasing=True)
    return out


def u8(imgs):
    return np.stack([np.round(np.clip(i, 0, 1) * 255).astype(np.uint8).transpose(2, 0, 1) for i in imgs])


crops = line_crops(data.page()) + line_crops(data.text())
photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.camera()]
np.savez_compressed(
    Path(__file__).with_name("ocr_inputs.npz"),
    det_x=u8([square(data.page())]),
    det_calib=u8([square(p) for p in photos]),
    rec_x=u8([line(c, 320) for c in crops[1::2][:3]]),
    rec_calib=u8([line(c, 320) for c in crops[0::2]]),
    cls_x=u8([line(c, 192) for c in crops[1::2][:3]]),
    cls_calib=u8([line(c, 192) for c in crops[0::2]]),
)
