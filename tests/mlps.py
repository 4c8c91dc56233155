"""Random quantized MLPs for the front-end tests: trained-looking and adversarial."""
import torch
from torch import nn

from qloom import nn as qnn


def act_layer(abits, pow2):
    if abits == 1:
        return qnn.BinaryAct()
    # a power-of-two step (max_val = qmax * 2**e) makes exact .5 ties common
    qmax = (1 << abits) - 1
    mv = qmax * 2.0 ** -3 if pow2 else 1.7
    return qnn.QuantAct(abits, signed=False, max_val=mv, learnable=False)


def random_mlp(seed, widths, wbits, abits, per_channel, bn, gamma="mixed", pow2=False,
               in_bits=8, final_act=False, bias=True):
    """widths = [in, h1, ..., out]. gamma: 'positive' | 'mixed' (negative and zero too)."""
    g = torch.Generator().manual_seed(seed)
    layers = [qnn.QuantInput(1, bipolar=True) if in_bits == 1 else
              qnn.QuantInput(in_bits, signed=False, scale=2.0 ** -in_bits if pow2 else 1 / 255)]
    n = len(widths) - 1
    for i in range(n):
        last = i == n - 1
        lin = qnn.QuantLinear(widths[i], widths[i + 1], bias=bias and not pow2,
                              weight_bits=wbits, per_channel=per_channel,
                              scale="pow2" if pow2 else "float")
        with torch.no_grad():
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) / widths[i] ** 0.5)
            if lin.bias is not None:
                lin.bias.copy_(torch.randn(lin.bias.shape, generator=g) * 0.3)
        layers.append(lin)
        if bn and (not last or final_act):
            b = nn.BatchNorm1d(widths[i + 1])
            with torch.no_grad():
                b.running_mean.copy_(torch.randn(widths[i + 1], generator=g) * 0.5)
                b.running_var.copy_(torch.rand(widths[i + 1], generator=g) * 2 + 0.05)
                w = torch.randn(widths[i + 1], generator=g)
                if gamma == "mixed":
                    r = torch.rand(widths[i + 1], generator=g)
                    w = torch.where(r < 0.15, torch.zeros_like(w), w)   # zero-slope channels
                else:
                    w = w.abs() + 0.1
                b.weight.copy_(w)
                b.bias.copy_(torch.randn(widths[i + 1], generator=g) * 0.5)
            layers.append(b)
        if not last or final_act:
            if not last and i % 2 == 1:
                layers.append(nn.Dropout(0.2))
            layers.append(act_layer(abits, pow2))
    return nn.Sequential(*layers).eval()


def calibrate(model, x):
    """Set batch-norm statistics and activation ranges from data, as training would."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.momentum = None
            m.reset_running_stats()
        if isinstance(m, qnn.QuantAct):
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def inputs(seed, n, k, in_bits=8, pow2=False):
    """Trained-looking inputs plus adversarial ones: extremes, code ties, constants."""
    g = torch.Generator().manual_seed(seed)
    scale = 2.0 ** -in_bits if pow2 else 1 / 255
    top = ((1 << in_bits) - 1) * scale
    parts = [torch.rand(n, k, generator=g) * top,                          # uniform
             (torch.rand(n, k, generator=g) < 0.5).float() * top,          # extremes only
             (torch.randint(0, 1 << in_bits, (n, k), generator=g) + 0.5) * scale,  # rounding ties
             torch.full((2, k), top), torch.zeros(2, k), torch.full((2, k), -1.0), torch.full((2, k), 9.0)]
    return torch.cat(parts)
