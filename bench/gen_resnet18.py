"""ResNet-18-shaped models with random weights (BatchNormalization kept) and random
calibration data, for the compile-time benchmark (`bench/compile_time.sh`).

Two variants:

- `birealnet` (32x32): a Bi-Real-style ResNet-18 for CIFAR-sized input. A 3x3 stem
  conv (64 channels), four stages of two basic blocks (64, 128, 256, 512 channels;
  stride 2 at the start of stages 2-4), global average pooling and a 512 -> 10 Gemm.
  As in Bi-Real Net, every 3x3 conv + BN has its own real-valued shortcut (identity, or
  2x2 average pooling + 1x1 conv + BN where the shape changes). The model is float;
  `qcc compile --bits 1` binarizes its middle convs. ~0.56 G MACs.
- `resnet18` (224x224): He et al.'s ImageNet ResNet-18: 7x7/2 stem conv, 3x3/2 max
  pooling, four stages of two basic blocks (relu(bn(conv)) twice, 1x1/2 conv + BN
  shortcut where the shape changes), global average pooling, 512 -> 1000 Gemm.
  ~1.8 G MACs.

Input `input` float32 [1,3,H,W], output `logits`; opset 13. Weights are He-normal and
seeded, so a run gives the same files on the same numpy and onnx versions. Only numpy
and onnx are needed.

    python3 bench/gen_resnet18.py VARIANT OUT.onnx [--calib OUT.npz --samples N]

`--calib` also writes N random images (`x` float32 [N,3,H,W], uniform in [0, 1]).
"""

import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(18)
nodes, inits = [], []
counter = [0]


def fresh(base):
    counter[0] += 1
    return f"{base}_{counter[0]}"


def const(name, arr):
    inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
    return name


def node(op, inputs, base, **attrs):
    n = fresh(base)
    nodes.append(helper.make_node(op, inputs, [n + ".y"], name=n, **attrs))
    return n + ".y"


def conv(x, cin, cout, k, stride):
    n = fresh("conv")
    w = const(n + ".w", rng.normal(0, np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k)))
    p = k // 2
    nodes.append(
        helper.make_node(
            "Conv", [x, w], [n + ".y"], name=n, kernel_shape=[k, k],
            strides=[stride, stride], pads=[p, p, p, p],
        )
    )
    return n + ".y"


def bn(x, c):
    n = fresh("bn")
    s = const(n + ".scale", rng.uniform(0.5, 1.5, c))
    b = const(n + ".bias", rng.normal(0, 0.1, c))
    m = const(n + ".mean", rng.normal(0, 0.1, c))
    v = const(n + ".var", rng.uniform(0.5, 1.5, c))
    nodes.append(
        helper.make_node(
            "BatchNormalization", [x, s, b, m, v], [n + ".y"], name=n, epsilon=1e-5
        )
    )
    return n + ".y"


def relu(x):
    return node("Relu", [x], "relu")


def add(a, b):
    return node("Add", [a, b], "add")


def head(x, cin, classes):
    x = node("GlobalAveragePool", [x], "pool")
    x = node("Flatten", [x], "flatten")
    w = const("fc.w", rng.normal(0, np.sqrt(1.0 / cin), (classes, cin)))
    b = const("fc.b", np.zeros(classes))
    nodes.append(helper.make_node("Gemm", [x, w, b], ["logits"], name="fc", transB=1))


def birealnet():
    x = relu(bn(conv("input", 3, 64, 3, 1), 64))
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for i in range(2):
            s = stride if i == 0 else 1
            # Two convs, each with its own shortcut (Bi-Real Net).
            short = x
            if s != 1 or cin != cout:
                short = node("AveragePool", [x], "avgpool", kernel_shape=[2, 2], strides=[2, 2])
                short = bn(conv(short, cin, cout, 1, 1), cout)
            x = add(bn(conv(x, cin, cout, 3, s), cout), short)
            x = add(bn(conv(x, cout, cout, 3, 1), cout), x)
            cin = cout
    head(x, 512, 10)
    return 32, 10


def resnet18():
    x = relu(bn(conv("input", 3, 64, 7, 2), 64))
    x = node("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for i in range(2):
            s = stride if i == 0 else 1
            y = relu(bn(conv(x, cin, cout, 3, s), cout))
            y = bn(conv(y, cout, cout, 3, 1), cout)
            short = x if s == 1 and cin == cout else bn(conv(x, cin, cout, 1, s), cout)
            x = relu(add(y, short))
            cin = cout
    head(x, 512, 1000)
    return 224, 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("variant", choices=["birealnet", "resnet18"])
    ap.add_argument("out")
    ap.add_argument("--calib", help="also write random calibration images here (.npz)")
    ap.add_argument("--samples", type=int, default=64)
    a = ap.parse_args()
    hw, classes = {"birealnet": birealnet, "resnet18": resnet18}[a.variant]()
    graph = helper.make_graph(
        nodes,
        a.variant,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, hw, hw])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    onnx.save(model, a.out)
    params = sum(int(np.prod(t.dims)) for t in inits)
    print(f"wrote {a.out}: {len(nodes)} nodes, {params} parameters")
    if a.calib:
        data = np.random.default_rng(1).uniform(0, 1, (a.samples, 3, hw, hw))
        np.savez(a.calib, x=data.astype(np.float32))
        print(f"wrote {a.calib}: x float32 {list(data.shape)}")


if __name__ == "__main__":
    main()
