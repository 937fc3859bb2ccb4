#!/usr/bin/env python3
"""Quantization-aware training with Brevitas, exported to QONNX.

Outputs (beside this script; run gen_data.py first):
  digits_w4a4.onnx  4-bit weights / 4-bit activations (8-bit input quantizer)
  digits_w2a2.onnx  2-bit weights / 2-bit activations (8-bit input quantizer)
  digits_w1a1.onnx  binary (BipolarQuant) weights and activations in the hidden layer,
                    8-bit weights in the first conv and the last linear layer
  <model>.ref.npz   x = first 16 test images, y = qonnx executor outputs for them
Each model is exported with brevitas.export.export_qonnx (TorchScript exporter) and
then passed through qonnx.util.cleanup.cleanup_model (shape inference, constant
folding that keeps Quant/BipolarQuant, readable names; graph I/O renamed back). Input `input` [1,1,8,8],
output `logits` [1,10] (QONNX models have a fixed batch of 1).
"""
import collections
import os
import tempfile

import numpy as np
import onnx
import torch
import torch.nn as nn

import brevitas.nn as qnn
from brevitas.export import export_qonnx
from brevitas.quant import (Int8ActPerTensorFloat, Int8WeightPerTensorFloat,
                            SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst)
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.util.cleanup import cleanup_model

from common import N_REF, load_split, path, save_ref


def act(bits):
    if bits == 1:
        return qnn.QuantIdentity(act_quant=SignedBinaryActPerTensorConst)
    return qnn.QuantReLU(bit_width=bits)


def wconv(cin, cout, bits):
    if bits == 1:
        return qnn.QuantConv2d(cin, cout, 3, padding=1, bias=False,
                               weight_quant=SignedBinaryWeightPerTensorConst)
    return qnn.QuantConv2d(cin, cout, 3, padding=1, bias=False,
                           weight_quant=Int8WeightPerTensorFloat, weight_bit_width=bits)


class QuantDigitsCNN(nn.Module):
    """QuantIdentity(8b) -> [QConv/BN/QAct/MaxPool] x2 -> Flatten -> QLinear."""

    def __init__(self, w_first, w_hidden, w_last, a_bits, c1=16, c2=32):
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, bit_width=8)
        self.conv1 = wconv(1, c1, w_first)
        self.bn1 = nn.BatchNorm2d(c1)
        self.act1 = act(a_bits)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = wconv(c1, c2, w_hidden)
        self.bn2 = nn.BatchNorm2d(c2)
        self.act2 = act(a_bits)
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = qnn.QuantLinear(c2 * 4, 10, bias=True,
                                  weight_quant=Int8WeightPerTensorFloat, weight_bit_width=w_last)

    def forward(self, x):
        x = self.inp(x)
        x = self.pool1(self.act1(self.bn1(self.conv1(x))))
        x = self.pool2(self.act2(self.bn2(self.conv2(x))))
        return self.fc(self.flatten(x))


CONFIGS = [
    # name, first-layer weight bits, hidden weight bits, last-layer weight bits, act bits, (c1, c2)
    ("digits_w4a4", 4, 4, 4, 4, (16, 32)),
    ("digits_w2a2", 2, 2, 2, 2, (16, 32)),
    ("digits_w1a1", 8, 1, 8, 1, (32, 64)),
]


def train(model, xtr, ytr, epochs, lr=0.01, seed=0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(xtr), torch.from_numpy(ytr)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    lossf = nn.CrossEntropyLoss()
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        tot = 0.0
        for i in range(0, len(x), 32):
            idx = perm[i:i + 32]
            opt.zero_grad()
            loss = lossf(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            tot += loss.item() * len(idx)
        sched.step()
        if ep % 5 == 4 or ep == epochs - 1:
            print(f"  epoch {ep + 1}: loss {tot / len(x):.4f}")
    model.eval()
    return model


def qonnx_run(model, x):
    iname = model.graph.input[0].name
    oname = model.graph.output[0].name
    outs = [execute_onnx(model, {iname: x[i:i + 1]})[oname] for i in range(len(x))]
    return np.concatenate(outs).astype(np.float32)


def op_hist(m):
    c = collections.Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in m.graph.node)
    return dict(sorted(c.items()))


def export_checked(name, model, xte, yte):
    """Exports `model` (trained, eval mode) to `<name>.onnx` as QONNX, cleaned up, with
    the graph I/O renamed to input/logits; writes `<name>.ref.npz` from the qonnx
    executor and prints its accuracy beside Brevitas' own. Returns the ModelWrapper."""
    with torch.no_grad():
        torch_out = model(torch.from_numpy(xte)).numpy()
    torch_acc = float((torch_out.argmax(1) == yte).mean())
    fname = f"{name}.onnx"
    with tempfile.TemporaryDirectory() as td:
        raw = os.path.join(td, "raw.onnx")
        export_qonnx(model, input_t=torch.zeros(1, 1, 8, 8), export_path=raw,
                     input_names=["input"], output_names=["logits"], dynamo=False)
        mw = cleanup_model(ModelWrapper(raw))
    # cleanup's GiveReadableTensorNames renames the graph I/O to global_in/global_out;
    # restore the names used by all models in this folder.
    mw.rename_tensor(mw.graph.input[0].name, "input")
    mw.rename_tensor(mw.graph.output[0].name, "logits")
    onnx.checker.check_model(mw.model)
    mw.save(path(fname))
    mw = ModelWrapper(path(fname))
    out = qonnx_run(mw, xte)
    acc = float((out.argmax(1) == yte).mean())
    maxdiff = float(np.abs(out - torch_out).max())
    save_ref(fname, xte[:N_REF], out[:N_REF])
    hist = op_hist(mw.model)
    opsets = {o.domain or "ai.onnx": o.version for o in mw.model.opset_import}
    print(f"  {fname}: qonnx test acc {acc:.4f} (brevitas/torch {torch_acc:.4f}, "
          f"max |qonnx-torch| {maxdiff:.2e}), {os.path.getsize(path(fname))} bytes")
    print(f"  opsets {opsets}")
    print(f"  ops {hist}")
    return mw


def main():
    torch.set_num_threads(2)
    xtr, ytr = load_split("train")
    xte, yte = load_split("test")
    for name, wf, wh, wl, ab, (c1, c2) in CONFIGS:
        torch.manual_seed(0)
        np.random.seed(0)
        model = QuantDigitsCNN(wf, wh, wl, ab, c1, c2)
        nparams = sum(p.numel() for p in model.parameters())
        print(f"{name}: {nparams} parameters")
        train(model, xtr, ytr, epochs=30)
        export_checked(name, model, xte, yte)


if __name__ == "__main__":
    main()
