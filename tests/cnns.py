"""Random small quantized CNNs for the front-end tests."""
import torch
from torch import nn

from qloom import nn as qnn

from mlps import act_layer


def random_cnn(seed, c_in=3, hw=10, chans=(8, 8), wbits=2, abits=2, per_channel=True, bn=True,
               stride=1, padding=1, groups=1, pool="max", in_bits=8, dense=10, gamma="mixed"):
    g = torch.Generator().manual_seed(seed)
    layers = [qnn.QuantInput(1, bipolar=True) if in_bits == 1 else qnn.QuantInput(in_bits, scale=1 / 255)]
    c, size = c_in, hw
    for i, oc in enumerate(chans):
        if (size + 2 * padding - 3) // stride + 1 < 1:
            raise ValueError("image too small for this stack")
        grp = groups if (c % groups == 0 and oc % groups == 0) else 1
        conv = qnn.QuantConv2d(c, oc, 3, stride=stride, padding=padding, groups=grp, bias=not bn,
                               weight_bits=wbits, per_channel=per_channel,
                               pad_value=(-1 if (i == 0 and in_bits == 1) or (i > 0 and abits == 1) else None))
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) / (9 * c // grp) ** 0.5)
        layers.append(conv)
        size = (size + 2 * padding - 3) // stride + 1
        if bn:
            b = nn.BatchNorm2d(oc)
            with torch.no_grad():
                w = torch.randn(oc, generator=g)
                if gamma == "mixed":
                    w[torch.rand(oc, generator=g) < 0.15] = 0
                else:
                    w = w.abs() + 0.1
                b.weight.copy_(w)
                b.bias.copy_(torch.randn(oc, generator=g) * 0.3)
            layers.append(b)
        layers.append(act_layer(abits, False))
        c = oc
        if pool == "max" and size >= 2 and i == 0:
            layers.append(nn.MaxPool2d(2))
            size //= 2
    if pool == "avg":
        layers += [nn.AdaptiveAvgPool2d(1), act_layer(abits if abits > 1 else 2, False)]
        size = 1
    layers += [nn.Flatten(), qnn.QuantLinear(c * size * size, dense, weight_bits=wbits, per_channel=per_channel)]
    return nn.Sequential(*layers).eval()
