"""Issue 11's second bar: a Bi-Real-style binary ResNet-18 (32x32 input; binary 3x3
convs with real-valued shortcuts; `gen_resnet18.py birealnet`) compiled by `qcc compile
--bits 1` (calibrated on 16 random images), linked with `harness.c` and timed as a
program, against ONNX Runtime fp32 and int8 (QDQ, per channel) of the same float model,
all single-threaded, in one run. Prints the CPU, the medians (us) and the ratios.

    /work/venv/bin/python bench/bireal.py [--seconds S] [--as-avx2]

Needs numpy, onnx, onnxruntime, cc and a release build of qcc (built here).
"""

import argparse
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402  (bench/run.py: ORT timing, CPU name, the qcc binary)

OUT = os.path.join(HERE, "out")


def qdq_of(f32, shape):
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    qdq = f32.replace(".onnx", "_qdq.onnx")
    if os.path.exists(qdq) and os.path.getmtime(qdq) >= os.path.getmtime(f32):
        return qdq

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.batches = iter([{"input": rng.uniform(0, 1, shape).astype(np.float32)}
                                 for _ in range(16)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(f32, qdq, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return qdq


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--as-avx2", action="store_true",
                    help="as on an AVX2-only CPU (bench/cpumask.c; see run.py --as-avx2)")
    a = ap.parse_args()
    if a.as_avx2 and "cpumask" not in os.environ.get("LD_PRELOAD", ""):
        run.as_avx2()
    os.makedirs(OUT, exist_ok=True)
    f32 = os.path.join(OUT, "birealnet.onnx")
    calib = os.path.join(OUT, "birealnet_calib64.npz")
    if not (os.path.exists(f32) and os.path.exists(calib)):
        subprocess.run([sys.executable, os.path.join(HERE, "gen_resnet18.py"), "birealnet", f32,
                        "--calib", calib, "--samples", "64"], check=True)
    qcc = run.qcc_binary()
    masked = " (AVX-512 and AVX-VNNI hidden by bench/cpumask.c)" if a.as_avx2 else ""
    print(f"# {run.cpu_model()}{masked}, single thread, batch 1, medians")
    o32 = run.ort_median(f32, a.seconds)
    o8 = run.ort_median(qdq_of(f32, (1, 3, 32, 32)), a.seconds)
    print(f"ONNX Runtime fp32 {o32:9.1f} us")
    print(f"ONNX Runtime int8 {o8:9.1f} us (QDQ, per channel)")
    for bits in ["1", "f32"]:
        flags = [] if bits == "f32" else ["--bits", bits, "--calib", calib, "--calib-limit", "16"]
        name = f"bireal_b{bits}"
        obj = os.path.join(OUT, name + ".o")
        subprocess.run([qcc, "compile", f32, "-o", obj, "--name", name, "--quiet", *flags],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        exe = os.path.join(OUT, name)
        rt = os.path.join(HERE, "..", "runtime", "c")
        subprocess.run(["cc", "-O2", "-I" + OUT, "-I" + rt, f'-DQCC_HEADER="{name}.h"',
                        f"-DQCC_PREFIX={name}", os.path.join(HERE, "harness.c"), obj,
                        os.path.join(rt, "qcc_runtime.c"), "-lpthread", "-o", exe], check=True)
        med = float(subprocess.run([exe, str(a.seconds)], check=True, capture_output=True,
                                   text=True).stdout.split()[0])
        print(f"qcc --bits {bits:<3}      {med:9.1f} us   {o32 / med:5.2f}x ORT fp32, "
              f"{o8 / med:5.2f}x ORT int8")


if __name__ == "__main__":
    main()
