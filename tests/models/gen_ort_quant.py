#!/usr/bin/env python3
"""ONNX Runtime static quantization of the folded float models.

For m in (digits_cnn, digits_resnet), from <m>_folded.onnx (run gen_float.py first):
  <m>_qdq.onnx   QDQ, per-channel int8 weights (QInt8), uint8 activations (QUInt8), opset 13
  <m>_qop.onnx   QOperator (QLinearConv, QGemm, ...), per-channel int8 weights, uint8 activations
  <m>_int4.onnx  QDQ with per-channel int4 weights (QInt4), uint8 activations, opset 21
  <m>_*.ref.npz  x = first 16 test images, y = onnxruntime outputs for them
Calibration: MinMax over the first 200 training images.
"""
import os
import tempfile

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from common import N_REF, load_split, ort_accuracy, path, prune_opset_imports, save_ref

N_CALIB = 200


class DigitsReader(CalibrationDataReader):
    def __init__(self, x):
        self.x = x
        self.i = 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        item = {"input": self.x[self.i:self.i + 1]}
        self.i += 1
        return item

    def rewind(self):
        self.i = 0


def main():
    np.random.seed(0)
    xtr, _ = load_split("train")
    xte, yte = load_split("test")
    calib = xtr[:N_CALIB]
    variants = [
        ("qdq", dict(quant_format=QuantFormat.QDQ, weight_type=QuantType.QInt8)),
        ("qop", dict(quant_format=QuantFormat.QOperator, weight_type=QuantType.QInt8)),
        ("int4", dict(quant_format=QuantFormat.QDQ, weight_type=QuantType.QInt4)),
    ]
    for base in ["digits_cnn", "digits_resnet"]:
        with tempfile.TemporaryDirectory() as td:
            pre = os.path.join(td, "pre.onnx")
            quant_pre_process(path(f"{base}_folded.onnx"), pre, skip_symbolic_shape=True)
            for tag, kw in variants:
                src = pre
                if tag == "int4":
                    # int4 QDQ needs opset 21; upgrade the float model first.
                    m = onnx.version_converter.convert_version(onnx.load(pre), 21)
                    src = os.path.join(td, "pre21.onnx")
                    onnx.save(m, src)
                name = f"{base}_{tag}.onnx"
                quantize_static(
                    src, path(name), DigitsReader(calib),
                    activation_type=QuantType.QUInt8, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax, **kw)
                prune_opset_imports(path(name))
                m = onnx.load(path(name))
                onnx.checker.check_model(m, full_check=True)
                acc, out = ort_accuracy(path(name), xte, yte)
                save_ref(name, xte[:N_REF], out[:N_REF])
                ops = sorted({(n.domain + ":" if n.domain else "") + n.op_type for n in m.graph.node})
                opset = {o.domain or "ai.onnx": o.version for o in m.opset_import}
                print(f"{name}: test acc {acc:.4f} opset {opset} ops {ops}")


if __name__ == "__main__":
    main()
