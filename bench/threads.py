"""Issue 15's scaling measurement: 1 against 2 threads, qcc (`qcc bench --threads T`,
the JIT running `NAME_run_ctx` on a pool of T std threads) and ONNX Runtime
(`intra_op_num_threads=T`), on the ResNet-20-style model (`gen_resnet20.py`) and its
4x-wide variant (`gen_resnet20_wide.py`, 64-256 channels).

    /work/venv/bin/python bench/threads.py [--rounds R] [--runs N] [--bits 8,2]

For each model: ONNX Runtime fp32 and int8 (QDQ, per channel) and qcc at each `--bits`,
each with 1 and 2 threads, measured in R interleaved rounds (1 thread, then 2, for every
engine in turn); a configuration's figure is its best (lowest) round median, which on a
machine shared with other work is the round least disturbed by it. With `--quiet S`,
each pair of measurements (1 and 2 threads of one engine) waits up to S seconds for a
moment when the machine has two cores free (a probe: two threads of a fixed loop must run
at least 1.8x one thread's rate). Prints the medians (ms), the speedups (1 thread / 2
threads) and the ratios ORT / qcc at 1 and at 2 threads.

Needs numpy, onnx, onnxruntime and cargo (a release build of qcc).
"""

import argparse
import logging
import os
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

logging.getLogger().setLevel(logging.ERROR)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")
sys.path.insert(0, HERE)

import run as common  # noqa: E402  (make_resnet20_qdq-style helpers, cpu_model)


PROBE_C = r"""
#include <pthread.h>
#include <stdio.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static void *work(void *a) { volatile double x = 1; for (long i = 0; i < 20000000L; i++) x = x * 1.0000001 + 1e-9; return a; }
int main(void) {
    double t = now(); work(0); double t1 = now() - t;
    pthread_t a, b; t = now();
    pthread_create(&a, 0, work, 0); pthread_create(&b, 0, work, 0);
    pthread_join(a, 0); pthread_join(b, 0);
    printf("%.3f\n", 2 * t1 / (now() - t));
    return 0;
}
"""


def probe_binary():
    src = os.path.join(OUT, "probe.c")
    exe = os.path.join(OUT, "probe")
    with open(src, "w") as f:
        f.write(PROBE_C)
    subprocess.run(["cc", "-O1", src, "-lpthread", "-o", exe], check=True)
    return exe


def wait_quiet(probe, seconds):
    """Waits up to `seconds` for two free cores; returns the last probe's scaling."""
    if not probe:
        return None
    deadline = time.time() + seconds
    while True:
        r = float(subprocess.run([probe], capture_output=True, text=True).stdout)
        if r >= 1.8 or time.time() > deadline:
            return r
        time.sleep(0.5)


def gen(script, name):
    path = os.path.join(OUT, name)
    subprocess.run([sys.executable, os.path.join(HERE, script), path], check=True,
                   stdout=subprocess.DEVNULL)
    return path


def qdq(f32):
    base = os.path.splitext(f32)[0]
    out = base + "_qdq.onnx"
    if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(f32):
        return out
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

    quantize_static(f32, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def ort_session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).uniform(0, 1, (1, 3, 32, 32)).astype(np.float32)
    feeds = {s.get_inputs()[0].name: x}
    for _ in range(10):
        s.run(None, feeds)
    return s, feeds


def ort_median_ms(sess, runs):
    s, feeds = sess
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        s.run(None, feeds)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def qcc_median_ms(qcc, model, bits, threads, runs):
    cmd = [qcc, "bench", model, "--bits", str(bits), "--runs", str(runs), "--threads",
           str(threads), "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    first = r.stdout.splitlines()[0]  # "median X ms"
    return float(first.split()[1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=200, help="timed runs per measurement")
    ap.add_argument("--bits", default="8,2")
    ap.add_argument("--models", default="resnet20,resnet20_wide")
    ap.add_argument("--quiet", type=float, default=0,
                    help="seconds to wait for two free cores before each measurement pair")
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    qcc = common.qcc_binary()
    bits = [int(b) for b in a.bits.split(",")]
    probe = probe_binary() if a.quiet > 0 else None
    scalings = []
    print(f"CPU: {common.cpu_model()}, {os.cpu_count()} logical CPUs; onnxruntime "
          f"{ort.__version__}; {a.rounds} rounds of {a.runs} runs, best round median")
    for name in a.models.split(","):
        f32 = gen("gen_resnet20.py" if name == "resnet20" else "gen_resnet20_wide.py",
                  name + ".onnx")
        q8 = qdq(f32)
        best = {}

        def note(key, v):
            best[key] = min(best.get(key, float("inf")), v)

        sessions = {(e, t): ort_session(p, t) for e, p in [("ORT fp32", f32), ("ORT int8", q8)]
                    for t in (1, 2)}
        for _ in range(a.rounds):
            for e in ("ORT fp32", "ORT int8"):
                scalings.append(wait_quiet(probe, a.quiet))
                for t in (1, 2):
                    note((e, t), ort_median_ms(sessions[(e, t)], a.runs))
            for b in bits:
                scalings.append(wait_quiet(probe, a.quiet))
                for t in (1, 2):
                    note((f"qcc --bits {b}", t), qcc_median_ms(qcc, f32, b, t, a.runs))
        print(f"\n== {name} (median ms, best of {a.rounds} rounds)")
        print(f"{'engine':<16} {'1 thread':>9} {'2 threads':>10} {'speedup':>8}"
              f" {'ORT int8/qcc 1T':>16} {'2T':>6} {'change':>7}")
        o1, o2 = best[("ORT int8", 1)], best[("ORT int8", 2)]
        for e in ["ORT fp32", "ORT int8"] + [f"qcc --bits {b}" for b in bits]:
            t1, t2 = best[(e, 1)], best[(e, 2)]
            line = f"{e:<16} {t1:>9.3f} {t2:>10.3f} {t1 / t2:>8.2f}"
            if e.startswith("qcc"):
                r1, r2 = o1 / t1, o2 / t2
                line += f" {r1:>16.2f} {r2:>6.2f} {100 * (r2 / r1 - 1):>+6.1f}%"
            print(line)
    if probe:
        ok = [x for x in scalings if x is not None]
        print(f"\nprobe before each pair: {sum(x >= 1.8 for x in ok)} of {len(ok)} found two free "
              f"cores (scaling {min(ok):.2f}..{max(ok):.2f})")


if __name__ == "__main__":
    main()
