"""Shared helpers for the tests/models generator scripts."""
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
N_REF = 16


def path(name):
    return os.path.join(HERE, name)


def load_split(split):
    d = np.load(path(f"digits_{split}.npz"))
    return d["x"], d["y"]


def ort_run(onnx_path, x):
    """Run an ONNX file with onnxruntime (CPU, deterministic single thread)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return sess.run(None, {name: x})[0]


def ort_accuracy(onnx_path, x, y):
    """(accuracy, logits) over x; feeds one image at a time if the batch is fixed to 1."""
    import onnx

    m = onnx.load(onnx_path)
    d0 = m.graph.input[0].type.tensor_type.shape.dim[0]
    if d0.HasField("dim_value") and d0.dim_value == 1:
        out = np.concatenate([ort_run(onnx_path, x[i:i + 1]) for i in range(len(x))])
    else:
        out = ort_run(onnx_path, x)
    return float((out.argmax(1) == y).mean()), out


def save_ref(onnx_name, x, y):
    np.savez_compressed(path(onnx_name.replace(".onnx", ".ref.npz")),
                        x=x.astype(np.float32), y=y.astype(np.float32))


def prune_opset_imports(onnx_path):
    """Drop opset imports of domains no node uses (ORT tools add many)."""
    import onnx

    m = onnx.load(onnx_path)
    used = {n.domain or "" for n in m.graph.node} | {""}
    keep = [o for o in m.opset_import if (o.domain or "") in used]
    del m.opset_import[:]
    m.opset_import.extend(keep)
    onnx.save(m, onnx_path)
