"""A ResNet-20-style CIFAR-sized model with random weights, BatchNormalization kept.

He et al.'s CIFAR ResNet-20: a 3x3 conv (16 channels), three stages of three basic blocks
(16, 32, 64 channels; stride 2 at the start of stages 2 and 3, where the shortcut is a
1x1 conv + BN), global average pooling and a 64 -> 10 Gemm. Input `input` float32
[1,3,32,32], output `logits` [1,10]; opset 13. ~272k parameters, ~41 M MACs.

Weights are random (He-normal; BN statistics near identity), seeded, so the file is the
same on every run with the same numpy and onnx versions. Only numpy and onnx are needed.

    python3 bench/gen_resnet20.py [OUT.onnx]     # default: bench/out/resnet20.onnx

`QCC_R20_WIDTH=W` multiplies every channel count by W (`gen_resnet20_wide.py` sets 4 and
names the model `resnet20_wide`).
"""

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(20)
nodes, inits = [], []
counter = [0]


def fresh(base):
    counter[0] += 1
    return f"{base}_{counter[0]}"


def const(name, arr):
    inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
    return name


def conv(x, cin, cout, k, stride):
    n = fresh("conv")
    w = const(n + ".w", rng.normal(0, np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k)))
    y = n + ".y"
    p = k // 2
    nodes.append(
        helper.make_node(
            "Conv", [x, w], [y], name=n, kernel_shape=[k, k], strides=[stride, stride],
            pads=[p, p, p, p],
        )
    )
    return y


def bn(x, c):
    n = fresh("bn")
    s = const(n + ".scale", rng.uniform(0.5, 1.5, c))
    b = const(n + ".bias", rng.normal(0, 0.1, c))
    m = const(n + ".mean", rng.normal(0, 0.1, c))
    v = const(n + ".var", rng.uniform(0.5, 1.5, c))
    y = n + ".y"
    nodes.append(
        helper.make_node("BatchNormalization", [x, s, b, m, v], [y], name=n, epsilon=1e-5)
    )
    return y


def relu(x):
    n = fresh("relu")
    nodes.append(helper.make_node("Relu", [x], [n + ".y"], name=n))
    return n + ".y"


def add(a, b):
    n = fresh("add")
    nodes.append(helper.make_node("Add", [a, b], [n + ".y"], name=n))
    return n + ".y"


def block(x, cin, cout, stride):
    y = relu(bn(conv(x, cin, cout, 3, stride), cout))
    y = bn(conv(y, cout, cout, 3, 1), cout)
    short = x if stride == 1 and cin == cout else bn(conv(x, cin, cout, 1, stride), cout)
    return relu(add(y, short))


WIDTH = int(os.environ.get("QCC_R20_WIDTH", "1"))
NAME = "resnet20" if WIDTH == 1 else "resnet20_wide"
x = relu(bn(conv("input", 3, 16 * WIDTH, 3, 1), 16 * WIDTH))
cin = 16 * WIDTH
for cout, stride in [(16 * WIDTH, 1), (32 * WIDTH, 2), (64 * WIDTH, 2)]:
    for i in range(3):
        x = block(x, cin, cout, stride if i == 0 else 1)
        cin = cout
nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"))
w = const("fc.w", rng.normal(0, np.sqrt(1.0 / cin), (10, cin)))
b = const("fc.b", np.zeros(10))
nodes.append(helper.make_node("Gemm", ["flat", w, b], ["logits"], name="fc", transB=1))

graph = helper.make_graph(
    nodes,
    NAME,
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
    inits,
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.checker.check_model(model)
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "out", f"{NAME}.onnx")
os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
onnx.save(model, out)
params = sum(int(np.prod(t.dims)) for t in inits)
print(f"wrote {out}: {len(nodes)} nodes, {params} parameters")
