"""ONNX Runtime outputs of the digits QDQ models computed exactly as the graph says.

The `tests/models/*_qdq.ref.npz` / `*_qop.ref.npz` references come from ONNX Runtime
with its default graph optimizations: QDQ groups are fused into QLinearConv / QGemm,
whose x86-64 AVX2 U8S8 kernels use VPMADDUBSW, which saturates pairwise u8*s8 sums to
int16 (documented in ONNX Runtime's quantization guide). Those outputs differ from the
ONNX semantics by up to 13 output steps on these models. With
`ORT_DISABLE_ALL`, ONNX Runtime runs QuantizeLinear / DequantizeLinear and the float ops
one by one, i.e. the model's exact meaning. The QOperator models share the QDQ models'
quantization parameters (same `quantize_static` calibration), so one file serves both.

    /work/venv/bin/python compiler/tests/examples_data/gen_ort_exact.py

writes `ort_exact.npz` beside this script: `y_digits_cnn` and `y_digits_resnet`, float32
[360, 10], the logits for the whole `tests/models/digits_test.npz` split (batch 1).
"""

import os

import numpy as np
import onnxruntime as ort

here = os.path.dirname(os.path.abspath(__file__))
models = os.path.join(here, "..", "..", "..", "tests", "models")
x = np.load(os.path.join(models, "digits_test.npz"))["x"]
so = ort.SessionOptions()
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
so.intra_op_num_threads = 1
out = {}
for fam in ["digits_cnn", "digits_resnet"]:
    s = ort.InferenceSession(
        os.path.join(models, fam + "_qdq.onnx"), so, providers=["CPUExecutionProvider"]
    )
    out["y_" + fam] = np.concatenate(
        [s.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))]
    ).astype(np.float32)
np.savez(os.path.join(here, "ort_exact.npz"), **out)
print({k: v.shape for k, v in out.items()})
