"""FINN's TFC topology: 784-64-64-64-10 MLP on 28x28 inputs, seeded weights.

Hardware metrics do not need trained weights; batch-norm statistics are set
from seeded random inputs so every activation level is used.

`binary_input=True` binarizes the pixels as FINN's TFC-w1a1 does (+1 where the pixel is
at least 0.5, else -1; the example inputs are then the pixels minus 0.5), so its first
layer is XNOR-popcount like the others and its figures compare with FINN/BNN-PYNQ. With
8-bit pixels (the default) the first layer adds and subtracts 8-bit inputs.
"""
import torch
from torch import nn

from qloom import nn as qnn


def build(wbits: int, abits: int, seed: int = 0, hidden=(64, 64, 64), n_in: int = 784, n_out: int = 10,
          binary_input: bool = False):
    g = torch.Generator().manual_seed(seed)
    w = "bipolar" if wbits == 1 else wbits
    act = (lambda: qnn.BinaryAct()) if abits == 1 else \
        (lambda: qnn.QuantAct(abits, max_val=2.0, learnable=False))
    layers = [qnn.QuantInput(bipolar=True) if binary_input else qnn.QuantInput(8, signed=False, scale=1 / 255)]
    widths = [n_in, *hidden]
    for a, b in zip(widths, widths[1:]):
        layers += [qnn.QuantLinear(a, b, bias=False, weight_bits=w), nn.BatchNorm1d(b), act()]
    layers.append(qnn.QuantLinear(widths[-1], n_out, bias=False, weight_bits=w))
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, qnn.QuantLinear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features ** 0.5)
    x = torch.rand(256, n_in, generator=g)
    if binary_input:
        x = x - 0.5                 # pixels in [0, 1] centred: the sign is the binarized pixel
    # calibrate batch norm on the data, as training would, then freeze
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval(), x
