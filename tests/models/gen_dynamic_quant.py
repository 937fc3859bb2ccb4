#!/usr/bin/env python3
"""Models quantized by ONNX Runtime's dynamic quantizer (`quantize_dynamic`), with ONNX
Runtime references, for DynamicQuantizeLinear, MatMulInteger / ConvInteger with a
run-time zero point, com.microsoft DynamicQuantizeMatMul and DynamicQuantizeLSTM
(issue 14).

Float sources (random weights, seed 14, made here; the LSTM one is the committed
crnn_lstm.onnx of gen_rnn.py):
  mlp:   MatMul -> Add -> Relu -> Gemm; input `x` [4, 16], output [4, 10].
  convnet: Conv 3x3 pad 1 -> Relu -> Conv 3x3 stride 2 -> Relu -> Flatten -> Gemm;
         input `x` [2, 3, 10, 10], output [2, 10].
Outputs (beside this script), each with <model>.ref.npz (x: input, y: ONNX Runtime's
first output, run with one intra-op thread):
  dyn_mlp.onnx          quantize_dynamic, per tensor, int8 weights: DynamicQuantizeLinear +
                        MatMulInteger + Cast + Mul.
  dyn_mlp_u8pc.onnx     the same with uint8 weights per channel (non-zero zero points).
  dyn_mlp_fused.onnx    dyn_mlp.onnx as ONNX Runtime's graph optimizer (extended level)
                        saves it: com.microsoft DynamicQuantizeMatMul.
  dyn_convnet.onnx      quantize_dynamic, per tensor, int8 weights: DynamicQuantizeLinear +
                        ConvInteger (+ MatMulInteger for the Gemm).
  dyn_convnet_pc.onnx   the same per channel.
  dyn_crnn_lstm.onnx    crnn_lstm.onnx through quantize_dynamic, per tensor, int8:
                        com.microsoft DynamicQuantizeLSTM, ConvInteger, MatMulInteger.
  dyn_crnn_lstm_pc.onnx the same per channel.
  dyn_crnn_lstm_u8.onnx the same with uint8 weights (per tensor, non-zero zero points).
  dyn_lstm_peep.onnx    an LSTM (reverse, hidden 8, batch 2, with bias, peepholes and
                        initial states; input `x` [6, 2, 5], output Y [6, 1, 2, 8])
                        through quantize_dynamic, int8 per channel: DynamicQuantizeLSTM
                        with every optional input.
Every output is checked to contain the ops it is meant to test. Needs numpy, onnx and
onnxruntime (versions used: onnx 1.22.0, onnxruntime 1.32.0).
"""
import collections
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

here = Path(__file__).resolve().parent
rng = np.random.default_rng(14)
tmp = Path(tempfile.mkdtemp())


def f32(*shape, s=0.3):
    return (rng.standard_normal(shape) * s).astype(np.float32)


def init(name, a):
    return numpy_helper.from_array(a, name)


def float_model(name, nodes, inp, out, inits):
    g = helper.make_graph(nodes, name, [inp], [out], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)], producer_name="gen_dynamic_quant.py")
    m.ir_version = 8
    onnx.checker.check_model(m)
    p = tmp / f"{name}.onnx"
    onnx.save(m, p)
    return p


def session(p, opt=ort.GraphOptimizationLevel.ORT_DISABLE_ALL, save_to=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = opt
    if save_to is not None:
        so.optimized_model_filepath = str(save_to)
    return ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])


def ops_of(p):
    m = onnx.load(p)
    return collections.Counter((n.domain or "") + ":" + n.op_type for n in m.graph.node)


def finish(name, p, x, want_ops):
    ops = ops_of(p)
    for o in want_ops:
        assert ops[o] > 0, f"{name}: no {o} in {dict(ops)}"
    s = session(p)
    y = s.run(None, {s.get_inputs()[0].name: x})[0]
    np.savez(here / f"{name}.ref.npz", x=x, y=y)
    print(name, x.shape, "->", y.shape, dict(ops))


def quantize(name, src, want_ops, x, **kw):
    out = here / f"{name}.onnx"
    quantize_dynamic(str(src), str(out), **kw)
    m = onnx.load(out)
    m.producer_name = "gen_dynamic_quant.py (onnxruntime quantize_dynamic)"
    # Keep only the opset imports the nodes use.
    used = {n.domain or "" for n in m.graph.node} | {""}
    keep = [o for o in m.opset_import if (o.domain or "") in used]
    del m.opset_import[:]
    m.opset_import.extend(keep)
    onnx.save(m, out)
    finish(name, out, x, want_ops)
    return out


# 1. MLP.
mlp = float_model(
    "mlp",
    [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1),
    ],
    helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16]),
    helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 10]),
    [init("w1", f32(16, 24)), init("b1", f32(24, s=0.1)), init("w2", f32(10, 24)), init("b2", f32(10, s=0.1))],
)
x_mlp = (rng.standard_normal((4, 16)) * 1.5).astype(np.float32)
mm = [":DynamicQuantizeLinear", ":MatMulInteger"]
dyn_mlp = quantize("dyn_mlp", mlp, mm, x_mlp, per_channel=False, weight_type=QuantType.QInt8)
quantize("dyn_mlp_u8pc", mlp, mm, x_mlp, per_channel=True, weight_type=QuantType.QUInt8)
# ONNX Runtime's optimizer fuses DynamicQuantizeLinear + MatMulInteger + Cast + Mul into
# com.microsoft DynamicQuantizeMatMul; the model it saves holds that op.
fused = here / "dyn_mlp_fused.onnx"
session(dyn_mlp, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, save_to=fused)
m = onnx.load(fused)
m.producer_name = "gen_dynamic_quant.py (onnxruntime optimizer)"
used = {n.domain or "" for n in m.graph.node} | {""}
keep = [o for o in m.opset_import if (o.domain or "") in used]
del m.opset_import[:]
m.opset_import.extend(keep)
onnx.save(m, fused)
finish("dyn_mlp_fused", fused, x_mlp, ["com.microsoft:DynamicQuantizeMatMul"])

# 2. Conv net.
conv = float_model(
    "convnet",
    [
        helper.make_node("Conv", ["x", "c1", "cb1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ar"]),
        helper.make_node("Conv", ["ar", "c2", "cb2"], ["b"], strides=[2, 2]),
        helper.make_node("Relu", ["b"], ["br"]),
        helper.make_node("Flatten", ["br"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1),
    ],
    helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 10, 10]),
    helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10]),
    [
        init("c1", f32(8, 3, 3, 3, s=0.4)),
        init("cb1", f32(8, s=0.1)),
        init("c2", f32(6, 8, 3, 3, s=0.3)),
        init("cb2", f32(6, s=0.1)),
        init("fw", f32(10, 6 * 4 * 4, s=0.2)),
        init("fb", f32(10, s=0.1)),
    ],
)
# Inputs of both signs, so that the zero point is inside the range.
x_conv = (rng.standard_normal((2, 3, 10, 10))).astype(np.float32)
cv = [":DynamicQuantizeLinear", ":ConvInteger", ":MatMulInteger"]
quantize("dyn_convnet", conv, cv, x_conv, per_channel=False, weight_type=QuantType.QInt8)
quantize("dyn_convnet_pc", conv, cv, x_conv, per_channel=True, weight_type=QuantType.QInt8)

# 3. The CRNN-shaped bidirectional LSTM of gen_rnn.py.
crnn = here / "crnn_lstm.onnx"
x_crnn = np.load(here / "crnn_lstm.ref.npz")["x"]
lstm = ["com.microsoft:DynamicQuantizeLSTM", ":DynamicQuantizeLinear", ":ConvInteger", ":MatMulInteger"]
kinds = ["LSTM", "MatMul", "Gemm", "Conv"]
quantize("dyn_crnn_lstm", crnn, lstm, x_crnn, per_channel=False, weight_type=QuantType.QInt8, op_types_to_quantize=kinds)
quantize("dyn_crnn_lstm_pc", crnn, lstm, x_crnn, per_channel=True, weight_type=QuantType.QInt8, op_types_to_quantize=kinds)
quantize("dyn_crnn_lstm_u8", crnn, lstm, x_crnn, per_channel=False, weight_type=QuantType.QUInt8, op_types_to_quantize=kinds)

# 4. An LSTM with every optional input (peepholes, initial states), reverse, batch 2.
H = 8
peep = float_model(
    "lstm_peep",
    [helper.make_node("LSTM", ["x", "W", "R", "B", "", "h0", "c0", "P"], ["y"], hidden_size=H, direction="reverse")],
    helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 2, 5]),
    helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 1, 2, H]),
    [
        init("W", f32(1, 4 * H, 5, s=0.5)),
        init("R", f32(1, 4 * H, H, s=0.5)),
        init("B", f32(1, 8 * H, s=0.2)),
        init("h0", f32(1, 2, H, s=0.5)),
        init("c0", f32(1, 2, H, s=0.5)),
        init("P", f32(1, 3 * H, s=0.5)),
    ],
)
x_peep = (rng.standard_normal((6, 2, 5))).astype(np.float32)
quantize("dyn_lstm_peep", peep, ["com.microsoft:DynamicQuantizeLSTM"], x_peep, per_channel=True, weight_type=QuantType.QInt8, op_types_to_quantize=["LSTM"])
