"""qcc's benchmark, in one run (single thread, batch 1, medians):

1. G MAC/s of the backend's fp32 and int8 conv/gemm kernels at M = N = 256, K = 1024
   (`compiler/examples/bench_kernels.rs`, as multiples of docs/kernels.md's 128-bit ceilings);
2. latency of the compiled float and int8 digits models and of a ResNet-20-style CIFAR
   model (`gen_resnet20.py`; float, and int8 by ONNX Runtime's `quantize_static`,
   QOperator, per-channel) against ONNX Runtime with `intra_op_num_threads=1`, as ratios;
3. the ResNet-20-style model compiled by `qcc compile --bits N` (N = 8, 4, 3, 2, 1, and
   the float model), each object linked with `harness.c` by `cc` and timed as a program,
   against ONNX Runtime fp32 and int8 (QDQ, per-channel) on the same machine: medians,
   ratios, and the objects' weight bytes from the compile report against the ONNX
   model's f32 parameter bytes (the fp32 object holds more: Winograd-transformed
   weights).

    /work/venv/bin/python bench/run.py [--seconds S] [--bits-only] [--cpu NAME] [--as-avx2]

`--as-avx2` runs everything as on an AVX2-only machine (Zen 2/3 class), ONNX Runtime's
kernel choice included, on a CPU with AVX-512 (`bench/cpumask.c`).

Needs numpy, onnx and onnxruntime (e.g. /work/venv) and cargo. qcc's latencies are
measured through the JIT, which runs the same generated code as objects; the Rust build
profile does not matter (generated code is timed, not the compiler).
"""

import argparse
import logging
import os
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

logging.getLogger().setLevel(logging.ERROR)  # quantize_static warns on every BN tensor

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


def make_resnet20_qdq(f32):
    """ONNX Runtime int8, QDQ format, per-channel weights (the issue's int8 baseline)."""
    qdq = os.path.join(OUT, "resnet20_qdq.onnx")
    if os.path.exists(qdq) and os.path.getmtime(qdq) >= os.path.getmtime(f32):
        return qdq
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

    quantize_static(f32, qdq, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return qdq


def qcc_binary():
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "qcc"], cwd=ROOT, check=True)
    return os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                        "release", "qcc")


CPU = None  # `--cpu` for qcc compile (None: qcc's default, native)


def qcc_object_median(qcc, model, bits, seconds):
    """Compiles `model` (at `bits`, or as it is when None), links it with harness.c and
    times it. Returns (median_us, weight_bytes) or an error string."""
    import json

    tag = "f32" if bits is None else f"b{bits}"
    name = f"r20_{tag}"
    obj = os.path.join(OUT, name + ".o")
    rep = os.path.join(OUT, name + ".json")
    cmd = [qcc, "compile", model, "-o", obj, "--name", name, "--report", rep]
    if bits is not None:
        cmd += ["--bits", str(bits)]
    if CPU:
        cmd += ["--cpu", CPU]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        lines = [l for l in r.stderr.strip().splitlines() if l.startswith("error")]
        return (lines[0] if lines else r.stderr.strip()[-200:])
    exe = os.path.join(OUT, name)
    rt = os.path.join(HERE, "..", "runtime", "c")
    subprocess.run(["cc", "-O2", f"-I{OUT}", f"-I{rt}", f'-DQCC_HEADER="{name}.h"',
                    f"-DQCC_PREFIX={name}", os.path.join(HERE, "harness.c"), obj,
                    os.path.join(rt, "qcc_runtime.c"), "-lpthread", "-o", exe], check=True)
    out = subprocess.run([exe, str(seconds)], capture_output=True, text=True, check=True)
    med = float(out.stdout.split()[0])
    with open(rep) as f:
        report = json.load(f)
    return med, report["weight_bytes"]


def bits_section(r20, seconds):
    qcc = qcc_binary()
    qdq = make_resnet20_qdq(r20)
    o32 = ort_median(r20, seconds)
    o8 = ort_median(qdq, seconds)
    print("\n== ResNet-20-style model, linked objects at N bits (median us, single thread)")
    print(f"ONNX Runtime: fp32 {o32:.1f} us, int8 QDQ per-channel {o8:.1f} us")
    import onnx
    from onnx import numpy_helper

    # The float model's parameters (every f32 initializer, 4 bytes per element).
    f32_bytes = sum(numpy_helper.to_array(t).size * 4 for t in onnx.load(r20).graph.initializer
                    if t.data_type == onnx.TensorProto.FLOAT)
    print(f"f32 parameters of the ONNX model: {f32_bytes} B")
    print(f"{'qcc':<14} {'us':>9} {'ORT fp32/qcc':>13} {'ORT int8/qcc':>13} {'weight B':>10}"
          f" {'f32 parameter B / weight B':>27}")
    for bits in [None, 8, 4, 3, 2, 1]:
        label = "fp32" if bits is None else f"--bits {bits}"
        r = qcc_object_median(qcc, r20, bits, seconds)
        if isinstance(r, str):
            print(f"{label:<14} n/a: {r}")
            continue
        med, wb = r
        print(f"{label:<14} {med:>9.1f} {o32 / med:>13.2f} {o8 / med:>13.2f} {wb:>10}"
              f" {f32_bytes / wb:>27.2f}")


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


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def as_avx2():
    """Re-executes this script with bench/cpumask.c preloaded (built here)."""
    with open("/proc/cpuinfo") as f:
        if "cpuid_fault" not in f.read().split():
            sys.exit("--as-avx2: this CPU (or its hypervisor) has no CPUID faulting "
                     "(`cpuid_fault` in /proc/cpuinfo); run on an AVX2 machine instead")
    os.makedirs(OUT, exist_ok=True)
    so = os.path.join(OUT, "cpumask.so")
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", os.path.join(HERE, "cpumask.c"), "-o", so,
                    "-ldl"], check=True)
    env = dict(os.environ, LD_PRELOAD=so)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0, help="time budget per model and engine")
    ap.add_argument("--bits-only", action="store_true",
                    help="only the ResNet-20 objects at N bits against ONNX Runtime fp32 and int8")
    ap.add_argument("--cpu", help="qcc compile --cpu for the objects (e.g. x86-64-v3)")
    ap.add_argument("--as-avx2", action="store_true",
                    help="run everything (ONNX Runtime, qcc's detection, the objects) as on "
                         "an AVX2-only CPU: AVX-512 and AVX-VNNI hidden by bench/cpumask.c "
                         "(needs CPUID faulting, `cpuid_fault` in /proc/cpuinfo)")
    a = ap.parse_args()
    if a.as_avx2 and "cpumask" not in os.environ.get("LD_PRELOAD", ""):
        as_avx2()
    global CPU
    CPU = a.cpu
    os.makedirs(OUT, exist_ok=True)
    r20, r20q = make_resnet20()
    masked = " (AVX-512 and AVX-VNNI hidden by bench/cpumask.c)" if a.as_avx2 else ""
    print(f"CPU: {cpu_model()}{masked}; qcc --cpu {a.cpu or 'native'}")
    if a.bits_only:
        bits_section(r20, a.seconds)
        print(f"\nonnxruntime {ort.__version__}, numpy {np.__version__}")
        return

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
    bits_section(r20, a.seconds)
    print(f"\nonnxruntime {ort.__version__}, numpy {np.__version__}")


if __name__ == "__main__":
    main()
