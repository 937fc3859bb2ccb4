#!/usr/bin/env python3
"""Small recurrent models (random weights, seed 5) with ONNX Runtime references, for the
unrolled RNN/GRU/LSTM lowering (issue 14).

Outputs (beside this script), each with <model>.ref.npz (x: input, y: ONNX Runtime's first
output):
  crnn_lstm.onnx  CRNN-shaped: Conv 3x3 -> Relu -> MaxPool -> columns as a sequence of
                  16 steps -> bidirectional LSTM (hidden 16) -> Gemm to 10 classes per step.
                  Input `input` [1,1,8,32], output `logits` [16,10].
  gru_reverse.onnx  GRU, reverse, linear_before_reset=1, with bias and an initial state;
                  input [6,2,8]; output Y_h [1,2,12] (batch-first layouts are in the ONNX
                  node tests; ONNX Runtime refuses them).
  rnn_relu.onnx   RNN, forward, Relu, clip 4; input [5,3,4]; output Y [5,1,3,6].
Needs numpy, onnx and onnxruntime.
"""
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

here = Path(__file__).resolve().parent
rng = np.random.default_rng(5)


def f32(*shape, s=0.3):
    return (rng.standard_normal(shape) * s).astype(np.float32)


def save(name, graph, x):
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], producer_name="gen_rnn.py")
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, here / f"{name}.onnx")
    s = ort.InferenceSession(str(here / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    y = s.run(None, {s.get_inputs()[0].name: x})[0]
    np.savez(here / f"{name}.ref.npz", x=x, y=y)
    print(name, x.shape, "->", y.shape)


def init(name, a):
    return numpy_helper.from_array(a, name)


# 1. CRNN-shaped bidirectional LSTM.
H = 16
nodes = [
    helper.make_node("Conv", ["input", "cw", "cb"], ["c"], pads=[1, 1, 1, 1]),
    helper.make_node("Relu", ["c"], ["r"]),
    helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
    helper.make_node("Reshape", ["p", "s1"], ["q"]),  # [1, 32, 16]
    helper.make_node("Transpose", ["q"], ["seq"], perm=[2, 0, 1]),  # [16, 1, 32]
    helper.make_node("LSTM", ["seq", "W", "R", "B"], ["Y", "Yh", "Yc"], hidden_size=H, direction="bidirectional"),
    helper.make_node("Reshape", ["Y", "s2"], ["yf"]),  # [16, 32]
    helper.make_node("Gemm", ["yf", "fw", "fb"], ["logits"], transB=1),
]
inits = [
    init("cw", f32(8, 1, 3, 3, s=0.5)),
    init("cb", f32(8, s=0.1)),
    init("s1", np.array([1, 32, 16], dtype=np.int64)),
    init("W", f32(2, 4 * H, 32)),
    init("R", f32(2, 4 * H, H)),
    init("B", f32(2, 8 * H, s=0.1)),
    init("s2", np.array([16, 2 * H], dtype=np.int64)),
    init("fw", f32(10, 2 * H)),
    init("fb", f32(10, s=0.1)),
]
g = helper.make_graph(
    nodes,
    "crnn_lstm",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 32])],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [16, 10])],
    inits,
)
save("crnn_lstm", g, rng.random((1, 1, 8, 32), dtype=np.float32))

# 2. GRU, reverse, linear_before_reset, batch first.
H = 12
g = helper.make_graph(
    [helper.make_node("GRU", ["x", "W", "R", "B", "", "h0"], ["", "Yh"], hidden_size=H, direction="reverse",
                      linear_before_reset=1)],
    "gru_reverse",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 2, 8])],
    [helper.make_tensor_value_info("Yh", TensorProto.FLOAT, [1, 2, H])],
    [init("W", f32(1, 3 * H, 8)), init("R", f32(1, 3 * H, H)), init("B", f32(1, 6 * H, s=0.1)),
     init("h0", f32(1, 2, H))],
)
save("gru_reverse", g, f32(6, 2, 8, s=1.0))

# 3. RNN with Relu and clip.
H = 6
g = helper.make_graph(
    [helper.make_node("RNN", ["x", "W", "R", "B"], ["Y"], hidden_size=H, activations=["Relu"], clip=4.0)],
    "rnn_relu",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 3, 4])],
    [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [5, 1, 3, H])],
    [init("W", f32(1, H, 4, s=0.6)), init("R", f32(1, H, H, s=0.4)), init("B", f32(1, 2 * H, s=0.1))],
)
save("rnn_relu", g, f32(5, 3, 4, s=1.0))
