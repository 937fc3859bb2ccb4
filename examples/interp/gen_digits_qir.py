"""Writes digits_cnn.qir: the trained digits CNN (tests/models/digits_cnn_folded.onnx,
batch 1) in qcc's IR text form, plus digit0.npy (the first test image), so the
reference interpreter can run a real model before the ONNX frontend exists.

Usage: python examples/interp/gen_digits_qir.py   (needs numpy and onnx)
Handles just the ops of that model: Conv, Relu, MaxPool, Flatten, Gemm.
"""
import pathlib
import re

import numpy as np
import onnx
from onnx import numpy_helper

HERE = pathlib.Path(__file__).parent
ROOT = HERE.parent.parent
model = onnx.load(ROOT / "tests/models/digits_cnn_folded.onnx")
g = model.graph


def name(s):
    return re.sub(r"[^A-Za-z0-9_./$-]", "_", s).lstrip("/") or "_"


def f32(x):
    return repr(float(np.float32(x)))


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
shapes = {g.input[0].name: [1, 1, 8, 8]}
lines = [f"module digits_cnn {{", f"  input %{name(g.input[0].name)}: f32[1,1,8,8]"]
for k, v in inits.items():
    data = ", ".join(f32(x) for x in v.flatten())
    dims = ",".join(str(d) for d in v.shape)
    lines.append(f"  const @{name(k)}: f32[{dims}] = [{data}]")
    shapes[k] = list(v.shape)


def ref(v):
    return ("@" if v in inits else "%") + name(v)


def window(n, k, s, p0, p1):
    return (n + p0 + p1 - k) // s + 1


for node in g.node:
    a = attrs(node)
    ins = node.input
    x = shapes[ins[0]]
    if node.op_type == "Conv":
        w = shapes[ins[1]]
        p = a.get("pads", [0, 0, 0, 0])
        s = a.get("strides", [1, 1])
        out = [x[0], w[0], window(x[2], w[2], s[0], p[0], p[2]), window(x[3], w[3], s[1], p[1], p[3])]
        text = f"conv2d({', '.join(ref(i) for i in ins)}) {{pads = {list(p)}, strides = {list(s)}}}"
    elif node.op_type == "Relu":
        out = x
        text = f"relu({ref(ins[0])})"
    elif node.op_type == "MaxPool":
        k = a["kernel_shape"]
        s = a.get("strides", [1, 1])
        p = a.get("pads", [0, 0, 0, 0])
        out = [x[0], x[1], window(x[2], k[0], s[0], p[0], p[2]), window(x[3], k[1], s[1], p[1], p[3])]
        text = f"max_pool({ref(ins[0])}) {{kernel = {list(k)}, pads = {list(p)}, strides = {list(s)}}}"
    elif node.op_type == "Flatten":
        out = [x[0], int(np.prod(x[1:]))]
        text = f"flatten({ref(ins[0])}) {{axis = 1}}"
    elif node.op_type == "Gemm":
        w = shapes[ins[1]]
        tb = bool(a.get("transB", 0))
        out = [x[0], w[0] if tb else w[1]]
        text = f"gemm({', '.join(ref(i) for i in ins)}) {{trans_b = {'true' if tb else 'false'}}}"
    else:
        raise SystemExit(f"unsupported op {node.op_type}")
    shapes[node.output[0]] = out
    dims = ",".join(str(d) for d in out)
    lines.append(f"  %{name(node.output[0])}: f32[{dims}] = {text} loc(\"{node.name}\")")
lines.append(f"  output %{name(g.output[0].name)}")
lines.append("}")
(HERE / "digits_cnn.qir").write_text("\n".join(lines) + "\n")
test = np.load(ROOT / "tests/models/digits_test.npz")
np.save(HERE / "digit0.npy", test["x"][:1].astype(np.float32))
print("wrote digits_cnn.qir and digit0.npy; label of digit0:", int(test["y"][0]))
