#!/usr/bin/env python3
"""Digits CNNs trained with Brevitas the way the quantization methods train them (issue 13),
exported to QONNX like gen_brevitas.py's models (same training loop, export and cleanup;
30 epochs at lr 0.01, the binary model 50 epochs at lr 0.003).

Outputs (beside this script; run gen_data.py first):
  digits_mixed.onnx        mixed bit-widths per layer (DQA-attention / SQ-style mixed
                           precision as a trained network has it): weights 8 / 3 / 2 / 6
                           bits (conv1 / conv2 / conv3 / linear), activations 8 (input) /
                           5 / 4 / 7 bits, each layer its own Quant bit-width
  digits_ternary.onnx      TWN-style ternary weights in the hidden convs: conv2 with
                           Brevitas' SignedTernaryWeightPerTensorConst (2-bit narrow,
                           constant scale), conv3 with per-output-channel scales from the
                           mean |w| of each filter (2-bit narrow, codes {-1, 0, 1});
                           8-bit per-channel first conv and last linear, 8-bit activations
  digits_bipolar_mul.onnx  XNOR-Net / Bi-Real-style binary convs: BipolarQuant weights
                           (scale 1) whose per-output-channel scale alpha_c = mean |w_c|
                           is a separate Mul after the conv (sign(w) * alpha_c);
                           binary activations, 8-bit first conv and last linear
  <model>.ref.npz          x = first 16 test images, y = qonnx executor outputs for them

Package versions: see requirements-brevitas.txt (torch 2.15.0, brevitas 0.13.4,
qonnx 1.0.0, onnx 1.22.0, numpy 2.4.6).
"""
import sys

import numpy as np
import torch
import torch.nn as nn

import brevitas.nn as qnn
from brevitas.inject.enum import StatsOp
from brevitas.quant import (Int8ActPerTensorFloat, Int8WeightPerChannelFloat,
                            Int8WeightPerTensorFloat, SignedBinaryActPerTensorConst,
                            SignedBinaryWeightPerTensorConst, SignedTernaryWeightPerTensorConst)

from common import load_split
from gen_brevitas import export_checked, train


class TernaryWeightPerChannelMeanAbs(Int8WeightPerChannelFloat):
    """TWN-style ternary: 2-bit narrow signed ({-1, 0, 1} * s_c) with the per-channel
    scale s_c = mean |w_c| (so weights below s_c / 2 in magnitude round to 0)."""
    bit_width = 2
    narrow_range = True
    scaling_stats_op = StatsOp.AVE


class BinaryWeightUnitScale(SignedBinaryWeightPerTensorConst):
    """sign(w) with scale 1: the per-channel scale is applied by a separate Mul."""
    scaling_const = 1.0


def wconv(cin, cout, bits, quant=Int8WeightPerTensorFloat):
    return qnn.QuantConv2d(cin, cout, 3, padding=1, bias=False, weight_quant=quant,
                           weight_bit_width=bits)


class MixedCNN(nn.Module):
    """Per-layer bit-widths: 8-bit input, conv1 w8 -> a5, conv2 w3 -> a4, conv3 w2 -> a7,
    linear w6 (with a float bias)."""

    def __init__(self, c1=16, c2=32, c3=32):
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, bit_width=8)
        self.conv1 = wconv(1, c1, 8)
        self.bn1 = nn.BatchNorm2d(c1)
        self.act1 = qnn.QuantReLU(bit_width=5)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = wconv(c1, c2, 3)
        self.bn2 = nn.BatchNorm2d(c2)
        self.act2 = qnn.QuantReLU(bit_width=4)
        self.conv3 = wconv(c2, c3, 2)
        self.bn3 = nn.BatchNorm2d(c3)
        self.act3 = qnn.QuantReLU(bit_width=7)
        self.pool3 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = qnn.QuantLinear(c3 * 4, 10, bias=True, weight_quant=Int8WeightPerTensorFloat,
                                  weight_bit_width=6)

    def forward(self, x):
        x = self.inp(x)
        x = self.pool1(self.act1(self.bn1(self.conv1(x))))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.pool3(self.act3(self.bn3(self.conv3(x))))
        return self.fc(self.flatten(x))


class TernaryCNN(nn.Module):
    """8-bit per-channel conv1 -> ternary conv2 (per-tensor constant scale) -> ternary conv3
    (per-channel mean-|w| scales) -> 8-bit per-channel linear; 8-bit activations."""

    def __init__(self, c1=16, c2=32, c3=32):
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, bit_width=8)
        self.conv1 = wconv(1, c1, 8, Int8WeightPerChannelFloat)
        self.bn1 = nn.BatchNorm2d(c1)
        self.act1 = qnn.QuantReLU(bit_width=8)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = qnn.QuantConv2d(c1, c2, 3, padding=1, bias=False,
                                     weight_quant=SignedTernaryWeightPerTensorConst)
        self.bn2 = nn.BatchNorm2d(c2)
        self.act2 = qnn.QuantReLU(bit_width=8)
        self.conv3 = qnn.QuantConv2d(c2, c3, 3, padding=1, bias=False,
                                     weight_quant=TernaryWeightPerChannelMeanAbs)
        self.bn3 = nn.BatchNorm2d(c3)
        self.act3 = qnn.QuantReLU(bit_width=8)
        self.pool3 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = qnn.QuantLinear(c3 * 4, 10, bias=True, weight_quant=Int8WeightPerChannelFloat,
                                  weight_bit_width=8)

    def forward(self, x):
        x = self.inp(x)
        x = self.pool1(self.act1(self.bn1(self.conv1(x))))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.pool3(self.act3(self.bn3(self.conv3(x))))
        return self.fc(self.flatten(x))


class BinConvAlpha(nn.Module):
    """XNOR-Net's binary conv: conv(x, sign(w)) * alpha_c with alpha_c = mean |w_c|
    (computed from the weights, so qonnx's cleanup constant-folds it into a Mul by a
    [1, C, 1, 1] constant after the Conv whose weight is BipolarQuant(w, 1))."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = qnn.QuantConv2d(cin, cout, 3, padding=1, bias=False,
                                    weight_quant=BinaryWeightUnitScale)

    def forward(self, x):
        y = self.conv(x)  # clamps the weights in place first (InplaceTensorClampSte)
        # No gradient through alpha (the clamp above rewrites the weights in place).
        alpha = self.conv.weight.detach().abs().mean(dim=(1, 2, 3)).view(1, -1, 1, 1)
        return y * alpha


class BipolarMulCNN(nn.Module):
    """8-bit conv1 -> BN -> sign -> pool -> binary conv2 * alpha -> BN -> sign -> binary
    conv3 * alpha -> pool -> 8-bit QuantIdentity -> 8-bit linear."""

    def __init__(self, c1=16, c2=32, c3=32):
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, bit_width=8)
        self.conv1 = wconv(1, c1, 8)
        self.bn1 = nn.BatchNorm2d(c1)
        self.act1 = qnn.QuantIdentity(act_quant=SignedBinaryActPerTensorConst)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = BinConvAlpha(c1, c2)
        self.bn2 = nn.BatchNorm2d(c2)
        self.act2 = qnn.QuantIdentity(act_quant=SignedBinaryActPerTensorConst)
        self.conv3 = BinConvAlpha(c2, c3)
        self.pool3 = nn.MaxPool2d(2)
        self.act3 = qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, bit_width=8)
        self.flatten = nn.Flatten()
        self.fc = qnn.QuantLinear(c3 * 4, 10, bias=True, weight_quant=Int8WeightPerTensorFloat,
                                  weight_bit_width=8)

    def forward(self, x):
        x = self.inp(x)
        x = self.pool1(self.act1(self.bn1(self.conv1(x))))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.act3(self.pool3(self.conv3(x)))
        return self.fc(self.flatten(x))


MODELS = [
    # name, model, epochs, learning rate (the binary model trains better slower, longer)
    ("digits_mixed", MixedCNN, 30, 0.01),
    ("digits_ternary", TernaryCNN, 30, 0.01),
    ("digits_bipolar_mul", BipolarMulCNN, 50, 0.003),
]


def main():
    """Makes every model, or those named on the command line."""
    torch.set_num_threads(2)
    only = set(sys.argv[1:])
    xtr, ytr = load_split("train")
    xte, yte = load_split("test")
    for name, cls, epochs, lr in MODELS:
        if only and name not in only:
            continue
        torch.manual_seed(0)
        np.random.seed(0)
        model = cls()
        nparams = sum(p.numel() for p in model.parameters())
        print(f"{name}: {nparams} parameters")
        train(model, xtr, ytr, epochs=epochs, lr=lr)
        mw = export_checked(name, model, xte, yte)
        for n in mw.graph.node:
            if n.op_type in ("Quant", "BipolarQuant", "Mul"):
                consts = []
                for i in n.input[1:]:
                    v = mw.get_initializer(i)
                    if v is not None:
                        consts.append(f"{list(v.shape)}" + (f"={float(v.flat[0]):g}"
                                                            if v.size == 1 else ""))
                attrs = {a.name: a.i for a in n.attribute if a.type == 2}
                print(f"    {n.op_type} {n.input[0]} -> {n.output[0]} {consts} {attrs}")


if __name__ == "__main__":
    main()
