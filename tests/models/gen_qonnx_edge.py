#!/usr/bin/env python3
"""Tiny hand-built QONNX graphs that exercise the edge cases of the QONNX quantizers.

Every graph has one float32 input `x` [1,4,3,3] and one float32 output `y` [1,4,3,3]
(except qonnx_quant_conv_weight: `y` is [1,2,3,3]). Custom ops use the domain
`qonnx.custom_op.general`; the qonnx-domain opset import is 1, except for the Trunc v2
graphs, which import it at version 2 (that is what selects the 6-input Trunc).
For each qonnx_<case>.onnx, qonnx_<case>.ref.npz holds `x` and `y` computed with the
qonnx executor (qonnx.core.onnx_exec.execute_onnx). The script also re-derives every
output from the formulas below with numpy and asserts that both agree exactly.

Quant:  y = X/scale + zeropt
        if bitwidth == 1 and signed: y = (y >= 0) ? 1 : -1
        else: y = rounding_mode(clip(y, min_int, max_int))
        Y = (y - zeropt) * scale
BipolarQuant: Y = (X >= 0 ? 1 : -1) * scale
Trunc v1 (5 inputs: X, scale, zeropt, in_bw, out_bw):
        y = round_half_even(X/scale + zeropt); y = y / 2^(in_bw - out_bw)
        y = rounding_mode(y); Y = (y - zeropt) * scale
Trunc v2 (6 inputs: X, scale, zeropt, in_bw, out_scale, out_bw; attrs signed, narrow):
        y = round_half_even(X/scale + zeropt); t = 2^round(log2(out_scale/scale))
        y = rounding_mode(clip(y / t, min_int(out_bw), max_int(out_bw)))
        Y = (y - zeropt/t) * out_scale
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx

from common import path

DOMAIN = "qonnx.custom_op.general"
SHAPE = [1, 4, 3, 3]

# x = k/4 for k = -20..15: with scale 0.5, x/scale = k/2 hits every .5 tie in [-10, 7.5]
# (including +-0.5, +-1.5, +-2.5) and exceeds the signed 4-bit range [-8, 7] on both ends.
X_QUANT = (np.arange(-20, 16, dtype=np.float32) / 4).reshape(SHAPE)

# Trunc inputs: X = 0.125 * v with v mostly integers in the signed 8-bit range; multiples
# of 8 become .5 ties after dividing by 2^4; the few half-integers test the first rounding.
TRUNC_SCALE = 0.125
TRUNC_V = np.array([-128, -120, -104, -72, -56, -40, -24, -17, -16, -9, -8, -7,
                    -2.5, -1.5, -0.5, 0, 0.5, 1.5, 2.5, 7, 8, 9, 15, 16,
                    17, 23, 24, 25, 40, 56, 72, 88, 104, 119, 120, 127], dtype=np.float32)
X_TRUNC = (TRUNC_V * TRUNC_SCALE).astype(np.float32).reshape(SHAPE)

ROUNDING = {
    "ROUND": np.round,  # half to even
    "CEIL": np.ceil,
    "FLOOR": np.floor,
    "UP": lambda v: np.sign(v) * np.ceil(np.abs(v)),
    "DOWN": np.trunc,
    "HALF_UP": lambda v: np.sign(v) * np.floor(np.abs(v) + 0.5),
    "HALF_DOWN": lambda v: np.sign(v) * np.ceil(np.abs(v) - 0.5),
}


def int_range(signed, narrow, bw):
    if signed:
        lo = -(2 ** (bw - 1)) + (1 if narrow else 0)
        hi = 2 ** (bw - 1) - 1
    else:
        lo = 0
        hi = 2 ** bw - 1 - (1 if narrow else 0)
    return lo, hi


def ref_quant(x, scale, zp, bw, signed, narrow, mode):
    y = x / scale + zp
    if bw == 1 and signed:
        y = np.where(y >= 0, 1.0, -1.0).astype(np.float32)
    else:
        lo, hi = int_range(signed, narrow, bw)
        y = ROUNDING[mode](np.clip(y, lo, hi))
    return ((y - zp) * scale).astype(np.float32)


def ref_trunc_v1(x, scale, zp, in_bw, out_bw, mode):
    y = np.round(x / scale + zp)
    y = y / (2.0 ** (in_bw - out_bw))
    y = ROUNDING[mode](y)
    return ((y - zp) * scale).astype(np.float32)


def ref_trunc_v2(x, scale, zp, in_bw, out_scale, out_bw, signed, narrow, mode):
    y = np.round(x / scale + zp)
    t = 2.0 ** np.round(np.log2(out_scale / scale))
    lo, hi = int_range(signed, narrow, out_bw)
    y = ROUNDING[mode](np.clip(y / t, lo, hi))
    return ((y - zp / t) * out_scale).astype(np.float32)


def f32(v):
    return np.asarray(v, dtype=np.float32)


def make_model(nodes, inits, qonnx_opset=1, out_shape=SHAPE, value_info=()):
    graph = helper.make_graph(
        nodes, "qonnx_edge",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(f32(v), k) for k, v in inits.items()],
        value_info=[helper.make_tensor_value_info(k, TensorProto.FLOAT, shp) for k, shp in value_info],
    )
    model = helper.make_model(
        graph, producer_name="qcc tests/models/gen_qonnx_edge.py",
        opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(DOMAIN, qonnx_opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def quant_model(scale, zp, bw, signed, narrow, mode):
    node = helper.make_node("Quant", ["x", "scale", "zeropt", "bitwidth"], ["y"], domain=DOMAIN,
                            signed=signed, narrow=narrow, rounding_mode=mode)
    return make_model([node], {"scale": scale, "zeropt": zp, "bitwidth": bw})


def cases():
    """Yield (name, model, x, numpy reference output, description)."""
    for mode in ROUNDING:
        yield (f"quant_{mode.lower()}", quant_model(0.5, 0.0, 4, 1, 0, mode), X_QUANT,
               ref_quant(X_QUANT, f32(0.5), f32(0), 4, 1, 0, mode),
               f"Quant int4 signed, narrow=0, scale 0.5, zp 0, rounding {mode}")
    simple = [
        ("quant_signed_narrow", 0.5, 0.0, 3, 1, 1, "ROUND", "Quant int3 signed narrow [-3,3]"),
        ("quant_unsigned", 0.5, 0.0, 4, 0, 0, "ROUND", "Quant uint4 [0,15]"),
        ("quant_unsigned_narrow", 0.5, 0.0, 4, 0, 1, "HALF_UP", "Quant uint4 narrow [0,14], HALF_UP"),
        ("quant_zeropt", 0.5, 0.5, 4, 1, 0, "ROUND", "Quant int4 signed, non-integer zp 0.5"),
        ("quant_zeropt_neg", 0.3, -1.25, 8, 0, 0, "ROUND",
         "Quant uint8, scale 0.3 (not a power of two), zp -1.25"),
        ("quant_bw1_signed", 0.5, 0.0, 1, 1, 0, "ROUND", "Quant bitwidth 1 signed (bipolar, x>=0 -> +1)"),
        ("quant_bw1_signed_zeropt", 0.5, 0.25, 1, 1, 0, "ROUND",
         "Quant bitwidth 1 signed with zp 0.25: sign of x/s+zp, then (+-1 - zp)*s"),
        ("quant_bw1_unsigned", 0.5, 0.0, 1, 0, 0, "ROUND", "Quant bitwidth 1 unsigned [0,1]"),
    ]
    for name, s, zp, bw, sg, nr, mode, desc in simple:
        yield (name, quant_model(s, zp, bw, sg, nr, mode), X_QUANT,
               ref_quant(X_QUANT, f32(s), f32(zp), bw, sg, nr, mode), desc)

    pc_scale = f32([0.5, 0.25, 1.0, 0.125]).reshape(1, 4, 1, 1)
    yield ("quant_perchannel", quant_model(pc_scale, 0.0, 5, 1, 0, "ROUND"), X_QUANT,
           ref_quant(X_QUANT, pc_scale, f32(0), 5, 1, 0, "ROUND"),
           "Quant int5 signed, per-channel scale [1,4,1,1] = [0.5,0.25,1,0.125]")
    pc_zp = f32([0.5, -1.5, 2.0, 0.25]).reshape(1, 4, 1, 1)
    yield ("quant_perchannel_zeropt", quant_model(pc_scale, pc_zp, 6, 0, 0, "ROUND"), X_QUANT,
           ref_quant(X_QUANT, pc_scale, pc_zp, 6, 0, 0, "ROUND"),
           "Quant uint6, per-channel scale and per-channel non-integer zp [0.5,-1.5,2,0.25]")

    node = helper.make_node("BipolarQuant", ["x", "scale"], ["y"], domain=DOMAIN)
    yield ("bipolarquant", make_model([node], {"scale": 0.75}), X_QUANT,
           (np.where(X_QUANT >= 0, 1.0, -1.0) * 0.75).astype(np.float32),
           "BipolarQuant scale 0.75 (x = 0 -> +scale)")

    # Per-output-channel weight quantization feeding a Conv (typical QONNX weight layout).
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.5, size=(2, 4, 3, 3)).astype(np.float32)
    w_scale = f32([0.125, 0.0625]).reshape(2, 1, 1, 1)
    nodes = [
        helper.make_node("Quant", ["w", "w_scale", "w_zeropt", "w_bitwidth"], ["wq"], domain=DOMAIN,
                         signed=1, narrow=1, rounding_mode="ROUND"),
        helper.make_node("Conv", ["x", "wq"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    ]
    m = make_model(nodes, {"w": w, "w_scale": w_scale, "w_zeropt": 0.0, "w_bitwidth": 4},
                   out_shape=[1, 2, 3, 3], value_info=[("wq", [2, 4, 3, 3])])
    wq = ref_quant(w, w_scale, f32(0), 4, 1, 1, "ROUND")
    yield ("quant_conv_weight", m, X_QUANT, conv2d_ref(X_QUANT, wq),
           "Quant int4 narrow per-output-channel scale [2,1,1,1] on a Conv weight, then Conv pad 1")

    for mode, zp in [("FLOOR", 0.0), ("ROUND", 0.0), ("HALF_UP", 0.0), ("FLOOR", 3.0)]:
        node = helper.make_node("Trunc", ["x", "scale", "zeropt", "in_bw", "out_bw"], ["y"],
                                domain=DOMAIN, rounding_mode=mode)
        m = make_model([node], {"scale": TRUNC_SCALE, "zeropt": zp, "in_bw": 8, "out_bw": 4})
        name = f"trunc_v1_{mode.lower()}" + ("_zeropt" if zp else "")
        yield (name, m, X_TRUNC, ref_trunc_v1(X_TRUNC, f32(TRUNC_SCALE), f32(zp), 8, 4, mode),
               f"Trunc v1 scale 0.125 zp {zp:g} in_bw 8 -> out_bw 4 (divide by 16), {mode}")

    for mode, signed, narrow, out_bw, zp in [("FLOOR", 1, 0, 3, 0.0), ("ROUND", 1, 1, 3, 0.0),
                                             ("FLOOR", 0, 0, 3, 0.0), ("HALF_UP", 1, 0, 4, 2.0)]:
        node = helper.make_node("Trunc", ["x", "scale", "zeropt", "in_bw", "out_scale", "out_bw"],
                                ["y"], domain=DOMAIN, rounding_mode=mode, signed=signed,
                                narrow=narrow)
        m = make_model([node], {"scale": TRUNC_SCALE, "zeropt": zp, "in_bw": 8, "out_scale": 2.0,
                                "out_bw": out_bw}, qonnx_opset=2)
        name = (f"trunc_v2_{mode.lower()}_{'signed' if signed else 'unsigned'}"
                + ("_narrow" if narrow else "") + ("_zeropt" if zp else ""))
        yield (name, m, X_TRUNC,
               ref_trunc_v2(X_TRUNC, f32(TRUNC_SCALE), f32(zp), 8, f32(2.0), out_bw, signed,
                            narrow, mode),
               f"Trunc v2 scale 0.125 zp {zp:g} out_scale 2 (t=16) out_bw {out_bw} "
               f"signed={signed} narrow={narrow}, {mode}")


def conv2d_ref(x, w):
    """Plain NCHW conv, stride 1, pad 1, float64 accumulation."""
    n, c, h, wd = x.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, w.shape[0], h, wd))
    for o in range(w.shape[0]):
        for i in range(h):
            for j in range(wd):
                out[:, o, i, j] = (xp[:, :, i:i + 3, j:j + 3] * w[o]).sum(axis=(1, 2, 3))
    return out.astype(np.float32)


def main():
    for name, model, x, ref, desc in cases():
        fname = f"qonnx_{name}.onnx"
        onnx.save(model, path(fname))
        mw = ModelWrapper(path(fname))
        y = execute_onnx(mw, {"x": x})["y"].astype(np.float32)
        if name == "quant_conv_weight":
            ok = np.allclose(y, ref, atol=1e-5)
        else:
            ok = np.array_equal(y, ref)
        assert ok, f"{name}: qonnx executor differs from formula:\n{y}\nvs\n{ref}"
        np.savez_compressed(path(f"qonnx_{name}.ref.npz"), x=x, y=y)
        print(f"{fname}: {desc}")


if __name__ == "__main__":
    main()
