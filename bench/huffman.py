"""Bytes saved and decode cost of `--compress-weights huffman` (issue 13).

    python3 bench/huffman.py [--runs N] [--rounds R] [--qcc PATH]

For the digits CNN (float, and --bits 8, 4, 2 calibrated on digits_train.npz) and the
ResNet-20-style model (bench/out/resnet20.onnx, written by gen_resnet20.py when
missing; float and data-free --bits 8, 4, 2): compiles the object with and without the
flag (the report's coded, stored and saved bytes; the objects' data symbols, counted
from `readelf -sW`, must differ by exactly the saved bytes) and times `qcc bench`
(the JIT: the same code as the object) with 1 and 2 threads, with and without the flag,
`--rounds` times alternating, keeping each configuration's best median. The decode cost
is the difference of the medians; MB/s is the bytes that entry decodes (`NAME_run`: the
blobs its kernels read; `NAME_run_ctx`: those of its inline layers and of its tasks, in
parallel) over it. Prints a Markdown table. Only the Python standard library and a C toolchain's readelf are needed.
"""
import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out")


def data_bytes(obj, name):
    """Sum of the sizes of the object's data symbols NAME__dN."""
    text = subprocess.run(["readelf", "-sW", obj], check=True, capture_output=True,
                          text=True).stdout
    # readelf -W writes sizes over 99999 in hex (0x24000).
    pat = re.compile(r"^\s*\d+:\s+[0-9a-f]+\s+(0x[0-9a-f]+|\d+)\s+OBJECT\s+\S+\s+\S+\s+\S+\s+"
                     + re.escape(name) + r"__d\d+$")
    return sum(int(m.group(1), 0) for m in map(pat.match, text.splitlines()) if m)


def compile_once(qcc, model, name, flags, huffman):
    obj = os.path.join(OUT, f"{name}{'_h' if huffman else ''}.o")
    rep = obj[:-2] + ".json"
    extra = ["--compress-weights", "huffman"] if huffman else []
    subprocess.run([qcc, "compile", model, "-o", obj, "--name", name, "--report", rep]
                   + flags + extra, check=True, capture_output=True)
    with open(rep) as f:
        return json.load(f), data_bytes(obj, name), os.path.getsize(obj)


def bench(qcc, model, flags, threads, huffman, runs):
    extra = ["--compress-weights", "huffman"] if huffman else []
    out = subprocess.run([qcc, "bench", model, "--runs", str(runs), "--threads",
                          str(threads)] + flags + extra, check=True, capture_output=True,
                         text=True).stdout
    return float(re.search(r"median ([0-9.]+) ms", out).group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--qcc", default=os.environ.get("QCC", os.path.join(ROOT, "target",
                                                                          "release", "qcc")))
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    r20 = os.path.join(OUT, "resnet20.onnx")
    if not os.path.exists(r20):
        subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gen_resnet20.py"), r20],
                       check=True)
    models = os.path.join(ROOT, "tests", "models")
    digits = os.path.join(models, "digits_cnn.onnx")
    calib = ["--calib", os.path.join(models, "digits_train.npz")]
    shape = ["--input-shape", "input=1,1,8,8"]
    cases = [("digits CNN", "hd_f32", digits, shape, 1000)]
    cases += [(f"digits CNN --bits {b}", f"hd_b{b}", digits, shape + ["--bits", str(b)] + calib,
               1000) for b in (8, 4, 2)]
    cases += [("ResNet-20", "hr_f32", r20, [], a.runs)]
    cases += [(f"ResNet-20 --bits {b}", f"hr_b{b}", r20, ["--bits", str(b)], a.runs)
              for b in (8, 4, 2)]
    with open("/proc/cpuinfo") as f:
        cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    print(f"CPU: {cpu}; {os.cpu_count()} logical CPUs; load average "
          f"{os.getloadavg()[0]:.1f} at the start; medians of `qcc bench` (JIT), "
          f"best of {a.rounds} rounds\n")
    print("| model | weights in the object | coded (blobs) | stored | saved | ratio | "
          "object file | 1 thread ms (plain / huffman) | decode ms, MB/s | "
          "2 threads ms (plain / huffman) | decode ms, MB/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, name, model, flags, runs in cases:
        rep_p, data_p, size_p = compile_once(a.qcc, model, name, flags, False)
        rep_h, data_h, size_h = compile_once(a.qcc, model, name, flags, True)
        c = rep_h["compression"]
        assert data_p - data_h == c["saved_bytes"], (label, data_p, data_h, c)
        cols = []
        per_entry = {1: sum(b["raw_bytes"] for b in c["blob_list"] if b["run"]),
                     2: sum(b["raw_bytes"] for b in c["blob_list"] if b["run_ctx"])}
        for threads in (1, 2):
            best = {False: float("inf"), True: float("inf")}
            for _ in range(a.rounds):
                for h in (False, True):
                    best[h] = min(best[h], bench(a.qcc, model, flags, threads, h, runs))
            d = best[True] - best[False]
            mbs = per_entry[threads] / (d * 1e-3) / 1e6 if d > 0 else float("inf")
            cols.append(f"{best[False]:.4g} / {best[True]:.4g}")
            cols.append(f"{d:.4g}, {mbs:.0f}")
        print(f"| {label} | {data_p} -> {data_h} B | {c['raw_bytes']} B ({c['blobs']}) | "
              f"{c['stored_bytes']} B | {c['saved_bytes']} B | {c['ratio']:.3f} | "
              f"{size_p} -> {size_h} B | {cols[0]} | {cols[1]} | {cols[2]} | {cols[3]} |",
              flush=True)


if __name__ == "__main__":
    main()
