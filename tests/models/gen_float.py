#!/usr/bin/env python3
"""Train small float CNNs on the digits split and export them to ONNX (opset 13).

Outputs (beside this script):
  digits_cnn.onnx / digits_cnn_folded.onnx        BN kept / BN folded into Conv
  digits_resnet.onnx / digits_resnet_folded.onnx  BN kept / BN folded into Conv
  <model>.ref.npz   x = first 16 test images, y = onnxruntime logits for them
Input is named `input` [N,1,8,8] float32 (dynamic batch "N"), output `logits` [N,10].
Run gen_data.py first.
"""
import numpy as np
import onnx
import torch
import torch.nn as nn

from common import N_REF, load_split, ort_accuracy, path, save_ref

OPSET = 13


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.flatten(self.features(x)))


class DigitsResNet(nn.Module):
    def __init__(self, c=24):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.Hardswish())
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.act1 = nn.LeakyReLU(0.1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        x = self.stem(x)
        y = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        x = self.relu(x + y)
        return self.fc(self.flatten(self.pool(x)))


def train(model, xtr, ytr, epochs, lr=0.01, seed=0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(xtr)
    y = torch.from_numpy(ytr)
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


def export(model, name, fold):
    model.eval()
    dummy = torch.zeros(1, 1, 8, 8)
    kw = dict(
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        opset_version=OPSET, dynamo=False,
    )
    if fold:
        torch.onnx.export(model, (dummy,), path(name), do_constant_folding=True,
                          training=torch.onnx.TrainingMode.EVAL, **kw)
    else:
        torch.onnx.export(model, (dummy,), path(name), do_constant_folding=False,
                          training=torch.onnx.TrainingMode.PRESERVE, **kw)
    m = onnx.load(path(name))
    onnx.checker.check_model(m, full_check=True)
    n_bn = sum(n.op_type == "BatchNormalization" for n in m.graph.node)
    if fold:
        assert n_bn == 0, f"{name}: expected BN folded, found {n_bn} BN nodes"
    else:
        assert n_bn > 0, f"{name}: expected BatchNormalization nodes"
    return m


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    np.random.seed(0)
    xtr, ytr = load_split("train")
    xte, yte = load_split("test")
    for base, cls, epochs in [("digits_cnn", DigitsCNN, 30), ("digits_resnet", DigitsResNet, 30)]:
        torch.manual_seed(0)
        model = cls()
        nparams = sum(p.numel() for p in model.parameters())
        print(f"{base}: {nparams} parameters")
        train(model, xtr, ytr, epochs)
        with torch.no_grad():
            torch_out = model(torch.from_numpy(xte)).numpy()
        torch_acc = float((torch_out.argmax(1) == yte).mean())
        for suffix, fold in [("", False), ("_folded", True)]:
            name = f"{base}{suffix}.onnx"
            m = export(model, name, fold)
            acc, out = ort_accuracy(path(name), xte, yte)
            assert np.allclose(out, torch_out, atol=1e-4), f"{name}: ORT differs from torch"
            save_ref(name, xte[:N_REF], out[:N_REF])
            ops = sorted({n.op_type for n in m.graph.node})
            print(f"  {name}: ORT test acc {acc:.4f} (torch {torch_acc:.4f}) ops {ops}")


if __name__ == "__main__":
    main()
