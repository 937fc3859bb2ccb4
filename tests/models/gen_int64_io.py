"""Writes int64_io.onnx and int64_io.ref.npz (run from anywhere; numpy, onnx,
onnxruntime): a model whose input and one output are int64, as token ids and class
indices are in third-party models.

    ids int64 [1, 6] -> Cast(float) -> MatMul(w [6, 5]) -> m float [1, 5]
                                                        -> ArgMax(axis 1) -> cls int64 [1]

The reference holds `ids` (values that fit int32, negative ones included) and ONNX
Runtime's `cls` and `m` (compiler/tests/abi_typed.rs).
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper, numpy_helper

here = Path(__file__).resolve().parent
w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32), "w")
g = helper.make_graph(
    [
        helper.make_node("Cast", ["ids"], ["f"], to=T.FLOAT),
        helper.make_node("MatMul", ["f", "w"], ["m"]),
        helper.make_node("ArgMax", ["m"], ["cls"], axis=1, keepdims=0),
    ],
    "int64_io",
    [helper.make_tensor_value_info("ids", T.INT64, [1, 6])],
    [helper.make_tensor_value_info("cls", T.INT64, [1]), helper.make_tensor_value_info("m", T.FLOAT, [1, 5])],
    [w],
)
model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="gen_int64_io.py")
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, here / "int64_io.onnx")
ids = np.array([[3, -7, 49, 0, 12, 3]], dtype=np.int64)
cls, m = ort.InferenceSession(str(here / "int64_io.onnx"), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})
np.savez(here / "int64_io.ref.npz", ids=ids, cls=cls, m=m)
print("cls", cls, "m", m)
