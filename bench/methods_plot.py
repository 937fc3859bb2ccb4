"""Plots the compile-time methods' table (bench/methods_table.sh): top-1 and mean KL
against float, against average weight bits, one panel pair per model, one marker per
method family. Writes an SVG (no plotting library needed: the file is written by hand).

    bash bench/methods_table.sh > bench/out/methods/table.md
    python3 bench/methods_plot.py bench/out/methods/table.md docs/methods_plot.svg

The input is the markdown the table script prints:
    | model | bits | method | avg weight bits | top-1 % | mean KL vs float |
Rows without an average (failed builds) are skipped. The marker gives the activation
bits: a circle where they equal the weight bits (`--bits N`, budgets), a square for 8-bit
activations, a triangle for 3-bit ones.
"""

import math
import sys
from collections import defaultdict


def family(method):
    """The legend entry of a table row's method."""
    m = method.lower()
    for key, name in [
        ("index split", "SQ split by index"),
        ("sq gain re-fit", "SQ, gain re-fit"),
        ("sq ternary", "SQ ternary"),
        ("qil + sequential", "QIL + sequential"),
        ("dqa (multiply) + sequential", "DQA + sequential"),
        ("sq ", "SQ"),
        ("qil", "QIL"),
        ("sequential", "sequential"),
        ("dqa scales", "DQA scales"),
        ("dqa, multiply", "DQA, multiply"),
        ("dqa", "DQA"),
        ("budget", "budget (ILP)"),
        ("ternary", "ternary"),
    ]:
        if key in m:
            return name
    return "uniform min-max"


COLORS = {
    "uniform min-max": "#444444",
    "QIL": "#1f77b4",
    "sequential": "#d62728",
    "QIL + sequential": "#9467bd",
    "DQA + sequential": "#ff9896",
    "DQA scales": "#98df8a",
    "DQA": "#2ca02c",
    "DQA, multiply": "#006400",
    "budget (ILP)": "#ff7f0e",
    "ternary": "#8c564b",
    "SQ": "#e377c2",
    "SQ split by index": "#7f7f7f",
    "SQ ternary": "#bcbd22",
    "SQ, gain re-fit": "#17becf",
}


def parse(path):
    rows = []
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] in ("model", "") or cells[0].startswith("---"):
            continue
        model, bits, method, avg, top1, kl = cells
        try:
            rows.append((model.replace(".onnx", ""), bits, method, float(avg), float(top1), float(kl)))
        except ValueError:
            continue
    return rows


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def abits(bits):
    """The activation bits of a table row's `bits` cell, if it names them apart."""
    if "--abits" in bits:
        return int(bits.split("--abits")[1].split()[0])
    return None


def marker(x, y, c, a, tip):
    if a == 8:
        return f'<rect x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" width="7" height="7" fill="{c}"><title>{tip}</title></rect>'
    if a is not None:
        return f'<polygon points="{x:.1f},{y - 4.5:.1f} {x - 4:.1f},{y + 3:.1f} {x + 4:.1f},{y + 3:.1f}" fill="{c}"><title>{tip}</title></polygon>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{c}"><title>{tip}</title></circle>'


def panel(out, x0, y0, w, h, pts, xr, yr, log, title, ylabel):
    """One scatter panel at (x0, y0) of size w x h; pts: {family: [(x, y, abits), ...]}."""
    (xa, xb), (ya, yb) = xr, yr
    fy = (lambda v: math.log10(v)) if log else (lambda v: v)
    ya_, yb_ = fy(ya), fy(yb)
    px = lambda x: x0 + (x - xa) / (xb - xa) * w
    py = lambda y: y0 + h - (fy(y) - ya_) / (yb_ - ya_) * h
    out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#999"/>')
    out.append(f'<text x="{x0 + w / 2}" y="{y0 - 8}" text-anchor="middle" font-size="13">{esc(title)}</text>')
    out.append(
        f'<text x="{x0 - 42}" y="{y0 + h / 2}" text-anchor="middle" font-size="11" '
        f'transform="rotate(-90 {x0 - 42} {y0 + h / 2})">{esc(ylabel)}</text>'
    )
    out.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 32}" text-anchor="middle" font-size="11">average weight bits</text>')
    for t in range(math.ceil(xa), math.floor(xb) + 1):
        out.append(f'<line x1="{px(t)}" y1="{y0 + h}" x2="{px(t)}" y2="{y0 + h + 4}" stroke="#999"/>')
        out.append(f'<text x="{px(t)}" y="{y0 + h + 16}" text-anchor="middle" font-size="10">{t}</text>')
    if log:
        ticks = [10.0**e for e in range(math.floor(ya_), math.ceil(yb_) + 1) if ya <= 10.0**e <= yb]
        label = lambda v: f"1e{int(round(math.log10(v)))}"
    else:
        step = 1 if yb - ya <= 8 else 5 if yb - ya <= 40 else 10
        ticks = [v for v in range(math.ceil(ya), math.floor(yb) + 1) if v % step == 0]
        label = lambda v: f"{v:g}"
    for v in ticks:
        out.append(f'<line x1="{x0 - 4}" y1="{py(v)}" x2="{x0 + w}" y2="{py(v)}" stroke="#eee"/>')
        out.append(f'<text x="{x0 - 6}" y="{py(v) + 3}" text-anchor="end" font-size="10">{label(v)}</text>')
    for fam, ps in pts.items():
        c = COLORS.get(fam, "#000")
        for x, y, a in ps:
            out.append(marker(px(x), py(y), c, a, f"{esc(fam)}: {x:.2f} bits, {y:g}"))


def main():
    src, dst = sys.argv[1], sys.argv[2]
    rows = parse(src)
    if not rows:
        sys.exit(f"{src}: no table rows with an average weight bits value")
    models = sorted({r[0] for r in rows})
    pw, ph, gap = 340, 220, 90
    width = 80 + 2 * (pw + gap) + 170
    height = 50 + len(models) * (ph + 80)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    fams = []
    for i, model in enumerate(models):
        mine = [r for r in rows if r[0] == model]
        acc, kl = defaultdict(list), defaultdict(list)
        for _, bits, method, avg, top1, k in mine:
            f = family(method)
            if f not in fams:
                fams.append(f)
            acc[f].append((avg, top1, abits(bits)))
            kl[f].append((avg, max(k, 1e-6), abits(bits)))
        xs = [r[3] for r in mine]
        xr = (math.floor(min(xs)) - 0.2, math.ceil(max(xs)) + 0.2)
        accs = [r[4] for r in mine]
        ar = (max(0.0, math.floor(min(accs) - 1)), min(100.0, math.ceil(max(accs) + 0.5)))
        kls = [max(r[5], 1e-6) for r in mine]
        kr = (10.0 ** math.floor(math.log10(min(kls))), 10.0 ** math.ceil(math.log10(max(kls))))
        y0 = 40 + i * (ph + 80)
        panel(out, 80, y0, pw, ph, acc, xr, ar, False, f"{model}: top-1", "top-1 %")
        panel(out, 80 + pw + gap, y0, pw, ph, kl, xr, kr, True, f"{model}: mean KL vs float", "mean KL (log)")
    lx = 80 + 2 * (pw + gap) - 40
    for j, f in enumerate(fams):
        y = 50 + j * 18
        out.append(f'<circle cx="{lx}" cy="{y}" r="4" fill="{COLORS.get(f, "#000")}"/>')
        out.append(f'<text x="{lx + 10}" y="{y + 4}" font-size="11">{esc(f)}</text>')
    y = 60 + len(fams) * 18
    for a, text in [(None, "activations at the weight bits"), (8, "8-bit activations"), (3, "3-bit activations")]:
        out.append(marker(lx, y, "#666", a, text))
        out.append(f'<text x="{lx + 10}" y="{y + 4}" font-size="11">{text}</text>')
        y += 18
    out.append("</svg>")
    open(dst, "w").write("\n".join(out) + "\n")
    print(f"wrote {dst}: {len(rows)} points, {len(models)} models, {len(fams)} methods")


if __name__ == "__main__":
    main()
