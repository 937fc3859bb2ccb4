"""The real-model suite (issue 14): third-party ONNX models that qcc compiles at float, 8
and 4 bits, against ONNX Runtime fp32 and int8 (QDQ, per channel) on real inputs.

    /work/venv/bin/python bench/real_models.py [--runs R] [--models det,rec,cls]

For each model it prints:
- float: SQNR of qcc's float build against ONNX Runtime fp32 (dB);
- int8 / 4-bit: SQNR of qcc `--bits 8` / `--bits 4` and of ONNX Runtime's int8 QDQ
  against float, with a task metric (det: text-mask IoU at 0.3; rec: agreement of the
  greedy CTC decoding per time step; cls: agreement of the predicted class);
- latency (ms, median, one thread, batch 1): ONNX Runtime fp32 and int8, qcc float,
  `--bits 8`, `--bits 4` (`qcc bench`, the JIT, which runs the same code as objects).

The models are PP-OCRv4 det and rec and the PP-OCR mobile v2 direction classifier of
the `rapidocr-onnxruntime` 1.4.4 wheel, downloaded with `pip download --no-deps` into
bench/out/ocr the first time (not committed). Inputs come from scikit-image: the page
scan and the text image for det, text-line crops of both for rec and cls; calibration
uses other images (photos, other crops), never the evaluated ones.

Needs a release build of qcc (`cargo build --release`), numpy, onnx, onnxruntime,
scikit-image.
"""

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from skimage import color, data, transform

root = Path(__file__).resolve().parent.parent
out = root / "bench" / "out" / "ocr"
qcc = root / "target" / "release" / "qcc"
WHEEL_MODELS = {
    "det": "ch_PP-OCRv4_det_infer.onnx",
    "rec": "ch_PP-OCRv4_rec_infer.onnx",
    "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
}


def fetch_models():
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / v for k, v in WHEEL_MODELS.items()}
    if all(p.exists() for p in paths.values()):
        return paths
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "rapidocr-onnxruntime==1.4.4", "-d", str(out)],
        check=True,
        capture_output=True,
    )
    wheel = sorted(out.glob("rapidocr_onnxruntime-1.4.4-*.whl"))[0]
    with zipfile.ZipFile(wheel) as z:
        for k, v in WHEEL_MODELS.items():
            paths[k].write_bytes(z.read(f"rapidocr_onnxruntime/models/{v}"))
    return paths


MEAN = np.array([0.485, 0.456, 0.406])[:, None, None]
STD = np.array([0.229, 0.224, 0.225])[:, None, None]


def rgb(img):
    img = img.astype(np.float64)
    if img.max() > 1.5:
        img = img / 255.0
    return color.gray2rgb(img) if img.ndim == 2 else img[..., :3]


def det_input(img):
    """PP-OCR det preprocessing at 320x320 (ImageNet mean/std)."""
    img = transform.resize(rgb(img), (320, 320), anti_aliasing=True)
    return ((img.transpose(2, 0, 1) - MEAN) / STD).astype(np.float32)[None]


def line_crops(img, rows=48):
    """Horizontal bands of a text image that hold ink: text-line crops."""
    g = rgb(img).mean(axis=2)
    ink = (g < 0.5).mean(axis=1) if g.mean() > 0.5 else (g > 0.5).mean(axis=1)
    crops, y = [], 0
    while y + rows // 2 <= g.shape[0]:
        if ink[y : y + rows // 2].sum() > 0.5:
            crops.append(rgb(img)[max(0, y - rows // 4) : y + rows // 2 + rows // 4])
            y += rows // 2
        y += rows // 4
    return crops


def rec_input(crop, w=320, h=48):
    """PP-OCR rec/cls preprocessing: height h, width by aspect ratio up to w, zero
    padding to w, values in [-1, 1]."""
    ratio = crop.shape[1] / crop.shape[0]
    rw = min(w, max(8, int(np.ceil(h * ratio))))
    img = transform.resize(crop, (h, rw), anti_aliasing=True)
    x = np.zeros((3, h, w), np.float32)
    x[:, :, :rw] = (img.transpose(2, 0, 1) - 0.5) / 0.5
    return x[None]


def sqnr(ref, got):
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    err = ((ref - got) ** 2).sum()
    return float("inf") if err == 0 else 10 * np.log10((ref**2).sum() / err)


def ctc_agree(a, b):
    """Share of time steps whose greedy class agrees."""
    return float((a.argmax(-1) == b.argmax(-1)).mean())


def metric(kind, ref, got):
    if kind == "det":
        m, n = ref > 0.3, got > 0.3
        union = (m | n).sum()
        return "IoU", float((m & n).sum() / union) if union else 1.0
    if kind == "rec":
        return "steps", ctc_agree(ref, got)
    if kind == "yolo":
        # Class scores above 0.5 at the same anchors (IoU of the score masks).
        m, n = ref[:, 4:] > 0.5, got[:, 4:] > 0.5
        union = (m | n).sum()
        return "IoU", float((m & n).sum() / union) if union else 1.0
    if kind == "bert":
        # Mean cosine similarity of the token vectors.
        a, b = ref.reshape(-1, ref.shape[-1]), got.reshape(-1, got.shape[-1])
        cos = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)
        return "cosine", float(cos.mean())
    return "class", float((ref.argmax(-1) == got.argmax(-1)).mean())


def score(kind, refs, outs):
    """SQNR over all the inputs' outputs together, and the task metric's mean."""
    db = sqnr(np.concatenate([r.ravel() for r in refs]), np.concatenate([o.ravel() for o in outs]))
    return db, float(np.mean([metric(kind, r, o)[1] for r, o in zip(refs, outs)]))


def ort_session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_time(sess, x, runs):
    name = sess.get_inputs()[0].name
    sess.run(None, {name: x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


class Reader(CalibrationDataReader):
    def __init__(self, name, xs):
        self.it = iter([{name: x} for x in xs])

    def get_next(self):
        return next(self.it, None)


def ort_int8(path, calib, tmp):
    q = Path(tmp) / (path.stem + "_int8.onnx")
    if not q.exists():
        name = ort_session(path).get_inputs()[0].name
        quantize_static(
            str(path),
            str(q),
            Reader(name, calib),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    return q


def qcc_run(path, shape, x, flags, tmp, size=None):
    d = Path(tempfile.mkdtemp(dir=tmp))
    np.save(d / "x.npy", x)
    r = subprocess.run(
        [str(qcc), "run", str(path), "--input", str(d / "x.npy"), "--out", str(d / "o"), "--input-shape", shape, "--quiet", *flags],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        return None, r.stderr.strip().splitlines()[-1][:160]
    outs = [np.load(f) for f in sorted((d / "o").glob("*.npy"))]
    # The output the reference is (the first of ONNX Runtime's), by size.
    return next((o for o in outs if size is None or o.size == size), outs[0]), None


def qcc_bench(path, shape, flags, runs):
    r = subprocess.run(
        [str(qcc), "bench", str(path), "--input-shape", shape, "--runs", str(runs), "--quiet", *flags],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        return None
    return float(r.stdout.split("median ")[1].split(" ms")[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--models", default="det,rec,cls,yolo,bert")
    args = ap.parse_args()
    paths = fetch_models()
    text, page = data.text(), data.page()
    crops = line_crops(page) + line_crops(text)
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.camera()]
    models_dir = root / "tests" / "models"
    paths["yolo"] = models_dir / "yolo_tiny.onnx"
    paths["bert"] = models_dir / "bert_tiny.onnx"
    rng = np.random.default_rng(7)

    def yolo_input(img):
        return transform.resize(rgb(img), (160, 160), anti_aliasing=True).transpose(2, 0, 1).astype(np.float32)[None]

    suite = {
        # Photos (two evaluated, three for calibration).
        "yolo": ("images=1,3,160,160", [yolo_input(p) for p in photos[:2]], [yolo_input(p) for p in photos[2:]]),
        # Token embeddings: there is no text model to take them from, so normal ones.
        "bert": (
            "embeddings=1,32,64",
            [rng.standard_normal((1, 32, 64), dtype=np.float32) for _ in range(3)],
            [rng.standard_normal((1, 32, 64), dtype=np.float32) for _ in range(4)],
        ),
        # The page scan whole and its halves (each scaled to 320x320).
        "det": ("x=1,3,320,320", [det_input(page), det_input(page[:96]), det_input(page[96:])], [det_input(p) for p in photos]),
        "rec": ("x=1,3,48,320", [rec_input(c) for c in crops[1::2]], [rec_input(c) for c in crops[0::2]]),
        "cls": ("x=1,3,48,192", [rec_input(c, 192) for c in crops[1::2]], [rec_input(c, 192) for c in crops[0::2]]),
    }
    cpu = next(
        (l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
        "unknown CPU",
    )
    print(f"CPU: {cpu}; ONNX Runtime {ort.__version__}; one thread, batch 1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.models.split(","):
            shape, inputs, calib = suite[kind]
            path = paths[kind]
            np.savez(Path(tmp) / f"{kind}_calib.npz", x=np.concatenate(calib))
            cflags = ["--calib", str(Path(tmp) / f"{kind}_calib.npz")]
            fp32 = ort_session(path)
            int8 = ort_session(ort_int8(path, calib, tmp))
            name = fp32.get_inputs()[0].name
            ref = [fp32.run(None, {name: x})[0] for x in inputs]
            ref8 = [int8.run(None, {name: x})[0] for x in inputs]
            row = {"model": f"{kind} ({path.name}, {len(inputs)} inputs)"}
            row["ort int8"] = score(kind, ref, ref8)
            builds = {"float": [], "8": ["--bits", "8", *cflags], "4": ["--bits", "4", *cflags]}
            qf = None
            for b, flags in builds.items():
                outs, err = [], None
                for x in inputs:
                    o, err = qcc_run(path, shape, x, flags, tmp, ref[0].size)
                    if o is None:
                        break
                    outs.append(o)
                if err:
                    row[b] = err
                    continue
                if b == "float":
                    qf = outs
                    row[b] = (score(kind, ref, outs)[0], None)
                else:
                    row[b] = score(kind, qf or ref, outs)
            x0 = inputs[0]
            row["ms"] = {
                "ort fp32": ort_time(fp32, x0, args.runs),
                "ort int8": ort_time(int8, x0, args.runs),
                **{f"qcc {b}": qcc_bench(path, shape, flags, args.runs) for b, flags in builds.items()},
            }
            rows.append((kind, row))
            print(kind, row, flush=True)
    mname = {"det": "IoU", "rec": "step agreement", "cls": "class agreement", "yolo": "score-mask IoU", "bert": "token cosine"}
    print()
    print("| model | qcc float vs ORT fp32 | qcc 8-bit vs float | ORT int8 vs float | qcc 4-bit vs float | ms: ORT fp32 / int8 | ms: qcc float / 8 / 4 |")
    print("|---|---|---|---|---|---|---|")
    fmt = lambda v: v if isinstance(v, str) else (f"{v[0]:.1f} dB" + ("" if v[1] is None else f", {v[1]:.3f}"))
    fms = lambda v: "fails" if v is None else f"{v:.2f}"
    for kind, row in rows:
        ms = row["ms"]
        print(
            f"| {row['model']}; metric: {mname[kind]} | {fmt(row['float'])} | {fmt(row['8'])} | {fmt(row['ort int8'])} | {fmt(row['4'])} "
            f"| {fms(ms['ort fp32'])} / {fms(ms['ort int8'])} | {fms(ms['qcc float'])} / {fms(ms['qcc 8'])} / {fms(ms['qcc 4'])} |"
        )


if __name__ == "__main__":
    main()
