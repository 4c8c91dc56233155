"""FINN's CNV topology for 32x32x3 inputs, seeded weights; and a small CNN trained on the 8x8 digits.

CNV: 3x3 convs without padding 64, 64, maxpool, 128, 128, maxpool, 256, 256;
dense 512, 512, 10. 8-bit unsigned pixels at the input.
"""
import torch
from torch import nn

from qloom import nn as qnn

CNV_CONVS = [64, 64, "M", 128, 128, "M", 256, 256]


def _act(abits):
    return qnn.BinaryAct() if abits == 1 else qnn.QuantAct(abits, max_val=2.0, learnable=False)


def cnv(wbits: int, abits: int, seed: int = 0, convs=CNV_CONVS, dense=(512, 512), hw=32, n_out=10):
    g = torch.Generator().manual_seed(seed)
    w = "bipolar" if wbits == 1 else wbits
    layers, c, size = [qnn.QuantInput(8, scale=1 / 255)], 3, hw
    for v in convs:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
            size //= 2
            continue
        layers += [qnn.QuantConv2d(c, v, 3, bias=False, weight_bits=w), nn.BatchNorm2d(v), _act(abits)]
        c, size = v, size - 2
    layers.append(nn.Flatten())
    widths = [c * size * size, *dense]
    for a, b in zip(widths, widths[1:]):
        layers += [qnn.QuantLinear(a, b, bias=False, weight_bits=w), nn.BatchNorm1d(b), _act(abits)]
    layers.append(qnn.QuantLinear(widths[-1], n_out, bias=False, weight_bits=w))
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (qnn.QuantLinear, qnn.QuantConv2d)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
    x = torch.rand(64, 3, hw, hw, generator=g)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval(), x


def digits_cnn(wbits=2, abits=2, epochs=30, seed=0, progress=None):
    """A small CNN (8x8x1 -> conv16 -> pool -> conv32 -> pool -> dense 10) trained (QAT) on the digits."""
    from . import digits
    torch.manual_seed(seed)
    w = "bipolar" if wbits == 1 else wbits
    act = (lambda: qnn.BinaryAct()) if abits == 1 else (lambda: qnn.QuantAct(abits, max_val=2.0))
    model = nn.Sequential(
        qnn.QuantInput(5, scale=1.0),
        qnn.QuantConv2d(1, 16, 3, padding=1, bias=False, weight_bits=w), nn.BatchNorm2d(16), act(),
        nn.MaxPool2d(2),
        qnn.QuantConv2d(16, 32, 3, padding=1, bias=False, weight_bits=w), nn.BatchNorm2d(32), act(),
        nn.MaxPool2d(2), nn.Flatten(),
        qnn.QuantLinear(32 * 2 * 2, 10, bias=False, weight_bits=w))
    xtr, ytr, _, _ = digits.load()
    img = xtr.reshape(-1, 1, 8, 8)
    digits.train(model, img, ytr, epochs=epochs, seed=seed, progress=progress, batch=128)
    return model, img
