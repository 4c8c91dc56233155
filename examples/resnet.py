"""Graph-shaped example networks: MLPerf Tiny's ResNet-8 (seeded), and two small CNNs trained on the
8x8 digits, one residual and one depthwise-separable.

Residual adds use qloom.nn.QuantAdd: both branches end in a quantizer whose scale is a power
of two (QuantAct(..., scale="pow2"); BinaryAct's is 1), so the sum is an exact integer in the
unit of the smaller scale; the ReLU and the next quantizer after the add become thresholds.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qloom import nn as qnn


def _act(abits, signed=False, max_val=2.0, learnable=True):
    """The activation quantizer: BinaryAct for 1 bit, else a power-of-two-scale QuantAct."""
    if abits == 1:
        return qnn.BinaryAct()
    return qnn.QuantAct(abits, signed=signed, max_val=max_val, learnable=learnable, scale="pow2")


def _wbits(wbits):
    return "bipolar" if wbits == 1 else wbits


class ResidualBlock(nn.Module):
    """conv3x3-BN-act, conv3x3-BN-quant, plus the block input (or a 1x1 conv of it when the shape
    changes), added exactly (QuantAdd), then ReLU and the block's activation quantizer."""

    def __init__(self, cin, cout, stride, wbits, abits, learnable=True, shortcut_bn=False):
        super().__init__()
        w, pad = _wbits(wbits), (-1 if abits == 1 else None)     # a bipolar map pads with -1
        self.conv1 = qnn.QuantConv2d(cin, cout, 3, stride=stride, padding=1, bias=False, weight_bits=w,
                                     pad_value=pad)
        self.bn1, self.act1 = nn.BatchNorm2d(cout), _act(abits, learnable=learnable)
        self.conv2 = qnn.QuantConv2d(cout, cout, 3, padding=1, bias=False, weight_bits=w, pad_value=pad)
        # the branches are quantized before the add: signed (batch norm outputs are), one more bit
        self.bn2, self.q2 = nn.BatchNorm2d(cout), _act(abits if abits == 1 else abits + 1, True, learnable=learnable)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = qnn.QuantConv2d(cin, cout, 1, stride=stride, bias=False, weight_bits=w)
            self.short_bn = nn.BatchNorm2d(cout) if shortcut_bn else nn.Identity()
            self.short_q = _act(abits if abits == 1 else abits + 1, True, learnable=learnable)
        self.add = qnn.QuantAdd()
        self.act = _act(abits, learnable=learnable)
        self.relu = abits > 1               # sign(relu(s)) would be +1 always: binary nets skip the ReLU

    def forward(self, x):
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.q2(self.bn2(self.conv2(y)))
        s = x if self.short is None else self.short_q(self.short_bn(self.short(x)))
        z = self.add(y, s)
        return self.act(F.relu(z) if self.relu else z)


class ResNet8(nn.Module):
    """MLPerf Tiny image classification (CIFAR-10, 32x32x3): conv 16, three residual stacks (16, 32/2, 64/2),
    global average pool, dense 10. Convs pad 1 ('same' for stride 1; PyTorch's symmetric padding for
    stride 2, where Keras pads bottom-right only)."""

    def __init__(self, wbits=4, abits=4, hw=32, n_out=10, learnable=False):
        super().__init__()
        w = _wbits(wbits)
        self.inp = qnn.QuantInput(8, scale=1 / 255)
        self.conv0 = qnn.QuantConv2d(3, 16, 3, padding=1, bias=False, weight_bits=w)
        self.bn0, self.act0 = nn.BatchNorm2d(16), _act(abits, learnable=learnable)
        self.stack1 = ResidualBlock(16, 16, 1, wbits, abits, learnable)
        self.stack2 = ResidualBlock(16, 32, 2, wbits, abits, learnable)
        self.stack3 = ResidualBlock(32, 64, 2, wbits, abits, learnable)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.pool_q = _act(max(abits, 4), learnable=learnable)
        self.flat = nn.Flatten()
        self.fc = qnn.QuantLinear(64, n_out, bias=False, weight_bits=w)

    def forward(self, x):
        x = self.act0(self.bn0(self.conv0(self.inp(x))))
        x = self.stack3(self.stack2(self.stack1(x)))
        return self.fc(self.flat(self.pool_q(self.pool(x))))


def seeded(model, x, seed=0, passes=4):
    """Seeded weights (variance-preserving), then batch-norm statistics and activation ranges calibrated on
    `x` in training mode (no gradient step): a network whose hardware metrics are realistic."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (qnn.QuantLinear, qnn.QuantConv2d)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None                                   # a plain average over the passes
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, qnn.QuantAct) and not m.learnable:
                m.momentum = 0.5
        model.train()
        for _ in range(passes):
            model(x)
    return model.eval()


def resnet8(wbits=4, abits=4, seed=0, frames=32):
    """(model, example_input): ResNet-8 with seeded weights, calibrated on random 32x32x3 images."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(frames, 3, 32, 32, generator=g)
    return seeded(ResNet8(wbits, abits), x, seed), x


# ---------------------------------------------------------------- trained on the 8x8 digits

class DigitsResNet(nn.Module):
    """8x8x1 -> conv 16 -> residual block 16 -> maxpool -> residual block 32 (stride 2, 1x1 shortcut)
    -> dense 10."""

    def __init__(self, wbits=2, abits=2):
        super().__init__()
        w = _wbits(wbits)
        self.inp = qnn.QuantInput(5, scale=1.0)
        self.conv0 = qnn.QuantConv2d(1, 16, 3, padding=1, bias=False, weight_bits=w)
        self.bn0, self.act0 = nn.BatchNorm2d(16), _act(abits)
        self.block1 = ResidualBlock(16, 16, 1, wbits, abits, shortcut_bn=True)
        self.pool = nn.MaxPool2d(2)
        self.block2 = ResidualBlock(16, 32, 2, wbits, abits, shortcut_bn=True)
        self.flat = nn.Flatten()
        self.fc = qnn.QuantLinear(32 * 2 * 2, 10, bias=False, weight_bits=w)

    def forward(self, x):
        x = self.act0(self.bn0(self.conv0(self.inp(x))))
        x = self.block2(self.pool(self.block1(x)))
        return self.fc(self.flat(x))


def _dw_block(cin, cout, w, abits):
    """Depthwise 3x3 (one filter per channel) then pointwise 1x1, each with batch norm and a quantizer."""
    return [qnn.QuantConv2d(cin, cin, 3, padding=1, groups=cin, bias=False, weight_bits=w), nn.BatchNorm2d(cin),
            _act(abits),
            qnn.QuantConv2d(cin, cout, 1, bias=False, weight_bits=w), nn.BatchNorm2d(cout), _act(abits)]


def digits_dwsep_model(wbits=2, abits=2, width=16):
    """8x8x1 -> conv 16 -> [dw 3x3, pw 32] -> maxpool -> [dw 3x3, pw 32] -> maxpool -> dense 10 (DS-CNN style)."""
    w = _wbits(wbits)
    return nn.Sequential(
        qnn.QuantInput(5, scale=1.0),
        qnn.QuantConv2d(1, width, 3, padding=1, bias=False, weight_bits=w), nn.BatchNorm2d(width), _act(abits),
        *_dw_block(width, 2 * width, w, abits), nn.MaxPool2d(2),
        *_dw_block(2 * width, 2 * width, w, abits), nn.MaxPool2d(2),
        nn.Flatten(), qnn.QuantLinear(2 * width * 2 * 2, 10, bias=False, weight_bits=w))


def _trained(model, epochs, seed, progress):
    from . import digits
    torch.manual_seed(seed)
    xtr, ytr, _, _ = digits.load()
    img = xtr.reshape(-1, 1, 8, 8)
    digits.train(model, img, ytr, epochs=epochs, seed=seed, progress=progress, batch=128)
    return model, img


def digits_resnet(wbits=2, abits=2, epochs=20, seed=0, progress=None):
    """(model, training images): the small residual CNN, QAT-trained on the digits."""
    torch.manual_seed(seed)
    return _trained(DigitsResNet(wbits, abits), epochs, seed, progress)


def digits_dwsep(wbits=4, abits=2, epochs=20, seed=0, progress=None):
    """(model, training images): the depthwise-separable CNN, QAT-trained on the digits (4-bit weights: a
    3x3 depthwise filter has only 9 of them, and 2 bits lose most of the accuracy)."""
    torch.manual_seed(seed)
    return _trained(digits_dwsep_model(wbits, abits), epochs, seed, progress)
