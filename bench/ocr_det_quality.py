"""PP-OCRv4 det (rapidocr-onnxruntime 1.4.4) quantized by qcc: SQNR of the probability
map against the float model, and IoU of the text masks (threshold 0.3), on
scikit-image's page scan, calibrated on six of its photos (issue 13/14; the table in
docs/methods.md).

    python bench/ocr_det_quality.py ["--bits 8" "--bits 8 --act-method dqa" ...]

Needs a release build of qcc, numpy, scikit-image, and pip (the wheel is downloaded
with `pip download --no-deps` into bench/out/ocr the first time).
"""

import glob
import shlex
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from skimage import color, data, transform

root = Path(__file__).resolve().parent.parent
out = root / "bench" / "out" / "ocr"
out.mkdir(parents=True, exist_ok=True)
qcc = root / "target" / "release" / "qcc"
model = out / "ch_PP-OCRv4_det_infer.onnx"
if not model.exists():
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "rapidocr-onnxruntime==1.4.4", "-d", str(out)],
        check=True,
    )
    wheel = sorted(out.glob("rapidocr_onnxruntime-1.4.4-*.whl"))[0]
    with zipfile.ZipFile(wheel) as z:
        model.write_bytes(z.read("rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"))

mean = np.array([0.485, 0.456, 0.406])[:, None, None]
std = np.array([0.229, 0.224, 0.225])[:, None, None]


def prep(img):
    if img.ndim == 2:
        img = color.gray2rgb(img)
    img = transform.resize(img[..., :3], (320, 320), anti_aliasing=True)
    if img.max() > 1.5:
        img = img / 255.0
    return ((img.transpose(2, 0, 1) - mean) / std).astype(np.float32)


photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.camera(), data.immunohistochemistry()]
np.savez(out / "det_calib.npz", x=np.stack([prep(p) for p in photos]))
np.save(out / "page.npy", prep(data.page())[None])

sh = ["--input-shape", "x=1,3,320,320", "--quiet"]


def run(tag, flags):
    d = out / f"run_{tag}"
    t = time.time()
    subprocess.run(
        [str(qcc), "run", str(model), "--input", str(out / "page.npy"), "--out", str(d), *sh, *flags],
        check=True,
        capture_output=True,
    )
    return np.load(glob.glob(str(d / "*.npy"))[0]).astype(np.float64), time.time() - t


f, _ = run("float", [])
print("| build | SQNR | IoU | seconds |\n|---|---|---|---|")
for v in sys.argv[1:] or ["--bits 8", "--bits 8 --act-method dqa"]:
    flags = shlex.split(v) + ["--calib", str(out / "det_calib.npz")]
    g, secs = run(v.replace(" ", "_").replace("-", ""), flags)
    sqnr = 10 * np.log10((f**2).sum() / max(((f - g) ** 2).sum(), 1e-30))
    a, b = f > 0.3, g > 0.3
    iou = (a & b).sum() / max((a | b).sum(), 1)
    print(f"| `{v}` | {sqnr:.1f} dB | {iou:.3f} | {secs:.0f} |")
