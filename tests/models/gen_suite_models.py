"""The two generated models of the real-model suite (issue 14), built with onnx.helper
and numpy (random weights with fixed seeds; no PyTorch), and their ONNX Runtime
references:

- yolo_tiny.onnx: a YOLOv8-style detector at 160x160 (conv + batch norm + SiLU, C2f
  blocks with Split and Concat, SPPF max-pools, nearest upsampling and a two-scale head
  with distribution focal loss boxes (Softmax over 16 bins, a 1x1 conv with 0..15) and
  sigmoid class scores, concatenated to [1, 4 + 8, anchors]);
- bert_tiny.onnx: a BERT-style encoder of two layers (LayerNormalization, multi-head
  self-attention with Reshape/Transpose/MatMul/Softmax, Erf-form GELU feed-forward,
  residual adds) on float token embeddings [1, 32, 64] (int64 token ids are not taken at
  the object boundary yet), plus a pooled tanh classifier.

    /work/venv/bin/python tests/models/gen_suite_models.py

writes both models and `*.ref.npz` (`x`: inputs, `y`: ONNX Runtime's first output,
`y1`, ...: the others) next to this script.
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

here = Path(__file__).resolve().parent


class G:
    """A graph under construction: nodes, initializers and fresh names."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, arr, base="c"):
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def op(self, op, inputs, outputs=1, **attrs):
        outs = [self.name(op.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, **attrs))
        return outs[0] if outputs == 1 else outs

    # -- YOLO pieces
    def conv(self, x, cin, cout, k=1, s=1, act=True, bias=False):
        w = (self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        ins = [x, self.const(w, "w")]
        if bias:
            ins.append(self.const((self.rng.standard_normal(cout) * 0.1).astype(np.float32), "b"))
        y = self.op("Conv", ins, kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4)
        if not act:
            return y
        scale = self.const((1 + 0.1 * self.rng.standard_normal(cout)).astype(np.float32), "bn_s")
        shift = self.const((0.1 * self.rng.standard_normal(cout)).astype(np.float32), "bn_b")
        mean = self.const((0.1 * self.rng.standard_normal(cout)).astype(np.float32), "bn_m")
        var = self.const((1 + 0.2 * self.rng.random(cout)).astype(np.float32), "bn_v")
        y = self.op("BatchNormalization", [y, scale, shift, mean, var], epsilon=1e-3)
        return self.op("Mul", [y, self.op("Sigmoid", [y])])  # SiLU

    def c2f(self, x, cin, cout, n=1):
        c = cout // 2
        y = self.conv(x, cin, 2 * c)
        a, b = self.op("Split", [y, self.const(np.array([c, c], np.int64), "split")], outputs=2, axis=1)
        parts = [a, b]
        for _ in range(n):
            h = self.conv(self.conv(parts[-1], c, c, 3), c, c, 3)
            parts.append(self.op("Add", [parts[-1], h]))
        return self.conv(self.op("Concat", parts, axis=1), (2 + n) * c, cout)

    def sppf(self, x, c):
        y = self.conv(x, c, c // 2)
        pools = [y]
        for _ in range(3):
            pools.append(self.op("MaxPool", [pools[-1]], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2]))
        return self.conv(self.op("Concat", pools, axis=1), 2 * c, c)

    def head(self, x, c, nc, reg=16):
        box = self.conv(self.conv(x, c, c, 3), c, 4 * reg, 1, act=False, bias=True)
        cls = self.conv(self.conv(x, c, c, 3), c, nc, 1, act=False, bias=True)
        return box, cls

    def dfl(self, box, anchors, reg=16):
        b = self.op("Reshape", [box, self.const(np.array([1, 4, reg, anchors], np.int64), "shape")])
        b = self.op("Transpose", [b], perm=[0, 2, 1, 3])  # [1, reg, 4, anchors]
        b = self.op("Softmax", [b], axis=1)
        proj = self.const(np.arange(reg, dtype=np.float32).reshape(1, reg, 1, 1), "dfl")
        b = self.op("Conv", [b, proj])  # [1, 1, 4, anchors]
        return self.op("Reshape", [b, self.const(np.array([1, 4, anchors], np.int64), "shape")])


def yolo():
    g, nc = G(11), 8
    x = "images"
    p1 = g.conv(x, 3, 16, 3, 2)  # 80
    p2 = g.c2f(g.conv(p1, 16, 32, 3, 2), 32, 32)  # 40
    p3 = g.c2f(g.conv(p2, 32, 64, 3, 2), 64, 64)  # 20
    p4 = g.sppf(g.c2f(g.conv(p3, 64, 96, 3, 2), 96, 96), 96)  # 10
    up = g.op("Resize", [p4, "", g.const(np.array([1, 1, 2, 2], np.float32), "scales")], mode="nearest")
    f3 = g.c2f(g.op("Concat", [up, p3], axis=1), 160, 64)  # 20
    outs = []
    for feat, c, hw in [(f3, 64, 20), (p4, 96, 10)]:
        box, cls = g.head(feat, c, nc)
        a = hw * hw
        box = g.dfl(box, a)
        cls = g.op("Sigmoid", [g.op("Reshape", [cls, g.const(np.array([1, nc, a], np.int64), "shape")])])
        outs.append(g.op("Concat", [box, cls], axis=1))
    y = g.op("Concat", outs, axis=2)
    graph = helper.make_graph(
        g.nodes,
        "yolo_tiny",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 3, 160, 160])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 4 + nc, 500])],
        g.inits,
    )
    return graph


def bert():
    g = G(12)
    d, heads, seq, ff = 64, 4, 32, 256
    dh = d // heads
    x = "embeddings"

    def linear(h, cin, cout):
        w = (g.rng.standard_normal((cin, cout)) * np.sqrt(1.0 / cin)).astype(np.float32)
        b = (g.rng.standard_normal(cout) * 0.02).astype(np.float32)
        return g.op("Add", [g.op("MatMul", [h, g.const(w, "w")]), g.const(b, "b")])

    def layer_norm(h):
        gamma = g.const((1 + 0.1 * g.rng.standard_normal(d)).astype(np.float32), "ln_g")
        beta = g.const((0.1 * g.rng.standard_normal(d)).astype(np.float32), "ln_b")
        return g.op("LayerNormalization", [h, gamma, beta], axis=-1, epsilon=1e-12)

    def split_heads(h):
        h = g.op("Reshape", [h, g.const(np.array([1, seq, heads, dh], np.int64), "shape")])
        return g.op("Transpose", [h], perm=[0, 2, 1, 3])

    h = layer_norm(x)
    for _ in range(2):
        q, k, v = (split_heads(linear(h, d, d)) for _ in range(3))
        kt = g.op("Transpose", [k], perm=[0, 1, 3, 2])
        s = g.op("Mul", [g.op("MatMul", [q, kt]), g.const(np.array(1 / np.sqrt(dh), np.float32), "scale")])
        a = g.op("MatMul", [g.op("Softmax", [s], axis=-1), v])
        a = g.op("Reshape", [g.op("Transpose", [a], perm=[0, 2, 1, 3]), g.const(np.array([1, seq, d], np.int64), "shape")])
        h = layer_norm(g.op("Add", [h, linear(a, d, d)]))
        f = linear(h, d, ff)
        erf = g.op("Erf", [g.op("Div", [f, g.const(np.array(np.sqrt(2.0), np.float32), "sqrt2")])])
        f = g.op("Mul", [g.op("Mul", [f, g.op("Add", [erf, g.const(np.array(1.0, np.float32), "one")])]), g.const(np.array(0.5, np.float32), "half")])
        h = layer_norm(g.op("Add", [h, linear(f, ff, d)]))
    cls = g.op("Gather", [h, g.const(np.array(0, np.int64), "idx")], axis=1)  # [1, d]
    logits = linear(g.op("Tanh", [linear(cls, d, d)]), d, 2)
    graph = helper.make_graph(
        g.nodes,
        "bert_tiny",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, seq, d])],
        [
            helper.make_tensor_value_info(h, TensorProto.FLOAT, [1, seq, d]),
            helper.make_tensor_value_info(logits, TensorProto.FLOAT, [1, 2]),
        ],
        g.inits,
    )
    return graph


def save(graph, name, inputs):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path = here / f"{name}.onnx"
    onnx.save(model, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = sess.get_inputs()[0].name
    outs = [sess.run(None, {feed: x}) for x in inputs]
    ref = {"x": np.concatenate(inputs), "y": np.concatenate([o[0] for o in outs])}
    for i in range(1, len(outs[0])):
        ref[f"y{i}"] = np.concatenate([o[i] for o in outs])
    np.savez(here / f"{name}.ref.npz", **ref)
    print(f"{path.name}: {path.stat().st_size} bytes, outputs {[o.shape for o in outs[0]]}")


rng = np.random.default_rng(5)
save(yolo(), "yolo_tiny", [rng.random((1, 3, 160, 160), dtype=np.float32) for _ in range(2)])
save(bert(), "bert_tiny", [rng.standard_normal((1, 32, 64), dtype=np.float32) for _ in range(2)])
