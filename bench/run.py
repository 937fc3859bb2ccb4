"""qcc's benchmark, in one run (single thread, batch 1, medians):

1. G MAC/s of the backend's fp32 and int8 conv/gemm kernels at M = N = 256, K = 1024
   (`compiler/examples/bench_kernels.rs`, against KERNELS.md's ceilings);
2. latency of the compiled float and int8 digits models and of a ResNet-20-style CIFAR
   model (`gen_resnet20.py`; float, and int8 by ONNX Runtime's `quantize_static`,
   QOperator, per-channel) against ONNX Runtime with `intra_op_num_threads=1`, as ratios.

    /work/venv/bin/python bench/run.py [--seconds S]

Needs numpy, onnx and onnxruntime (e.g. /work/venv) and cargo. qcc's latencies are
measured through the JIT, which runs the same generated code as objects; the Rust build
profile does not matter (generated code is timed, not the compiler).
"""

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")
MODELS = os.path.join(ROOT, "tests", "models")


def cargo_example(name, args):
    cmd = ["cargo", "run", "-q", "-p", "qcc", "--example", name, "--"] + args
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return r.stdout


def make_resnet20():
    f32 = os.path.join(OUT, "resnet20.onnx")
    subprocess.run([sys.executable, os.path.join(HERE, "gen_resnet20.py"), f32], check=True,
                   stdout=subprocess.DEVNULL)
    q8 = os.path.join(OUT, "resnet20_qop.onnx")
    if not os.path.exists(q8) or os.path.getmtime(q8) < os.path.getmtime(f32):
        from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                              quantize_static)

        class Reader(CalibrationDataReader):
            def __init__(self):
                rng = np.random.default_rng(0)
                self.batches = iter(
                    [{"input": rng.uniform(0, 1, (1, 3, 32, 32)).astype(np.float32)}
                     for _ in range(16)])

            def get_next(self):
                return next(self.batches, None)

        quantize_static(f32, q8, Reader(), quant_format=QuantFormat.QOperator,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
    return f32, q8


def ort_median(path, seconds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in s.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = np.random.default_rng(1).uniform(0, 1, shape).astype(np.float32)
    for _ in range(5):
        s.run(None, feeds)
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 10:
        t = time.perf_counter()
        s.run(None, feeds)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0, help="time budget per model and engine")
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    r20, r20q = make_resnet20()

    print("== kernels (G MAC/s, single thread, best of 20 calls)")
    sys.stdout.write(cargo_example("bench_kernels", ["20"]))

    models = [
        ("digits_cnn_folded (fp32)", os.path.join(MODELS, "digits_cnn_folded.onnx")),
        ("digits_cnn_qop (int8)", os.path.join(MODELS, "digits_cnn_qop.onnx")),
        ("digits_resnet_folded (fp32)", os.path.join(MODELS, "digits_resnet_folded.onnx")),
        ("digits_resnet_qop (int8)", os.path.join(MODELS, "digits_resnet_qop.onnx")),
        ("resnet20 3x32x32 (fp32, BN)", r20),
        ("resnet20_qop 3x32x32 (int8)", r20q),
    ]
    qcc = {}
    for label, path in models:
        r = subprocess.run(
            ["cargo", "run", "-q", "-p", "qcc", "--example", "bench_models", "--",
             "--seconds", str(a.seconds), path],
            cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            qcc[label] = None
            print(f"qcc cannot run {label}: {r.stderr.strip().splitlines()[-1] if r.stderr else ''}")
            continue
        _, med, _, _, macs = r.stdout.split()
        qcc[label] = (float(med), int(macs))

    print("\n== model latency, batch 1, single thread (median us; ratio = qcc / ONNX Runtime)")
    print(f"{'model':<30} {'MACs':>10} {'qcc us':>10} {'ORT us':>10} {'ratio':>7}  qcc G MAC/s")
    for label, path in models:
        o = ort_median(path, a.seconds)
        q = qcc.get(label)
        if q is None:
            print(f"{label:<30} {'':>10} {'n/a':>10} {o:>10.1f} {'n/a':>7}")
            continue
        med, macs = q
        print(f"{label:<30} {macs:>10} {med:>10.1f} {o:>10.1f} {med / o:>7.2f}  {macs / med / 1e3:.2f}")
    print(f"\nonnxruntime {ort.__version__}, numpy {np.__version__}")


if __name__ == "__main__":
    main()
