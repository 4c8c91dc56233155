"""Torch eval == IR for CNNs: conv (stride, padding, groups), batch norm, max/avg pooling, flatten."""
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

import qloom
from qloom import nn as qnn

from cnns import random_cnn


def images(seed, n, c, hw, bipolar=False):
    g = torch.Generator().manual_seed(seed)
    if bipolar:
        return torch.randn(n, c, hw, hw, generator=g)
    return torch.cat([torch.rand(n, c, hw, hw, generator=g),
                      (torch.rand(n, c, hw, hw, generator=g) < 0.5).float(),
                      (torch.randint(0, 256, (n, c, hw, hw), generator=g) + 0.5) / 255])


def calibrate_cnn(model, x):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
            w = m.weight.detach().clone()
            m.weight.data = w
        if isinstance(m, qnn.QuantAct):
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), c_in=st.integers(1, 4), hw=st.integers(5, 10),
       chans=st.lists(st.sampled_from([2, 4, 6, 8]), min_size=1, max_size=2),
       wbits=st.sampled_from(["bipolar", "ternary", 2, 4, 8]), abits=st.sampled_from([1, 2, 4]),
       per_channel=st.booleans(), bn=st.booleans(), stride=st.sampled_from([1, 2]),
       padding=st.sampled_from([0, 1]), groups=st.sampled_from([1, 2]),
       pool=st.sampled_from(["max", "avg", None]), in_bits=st.sampled_from([1, 8]))
def test_random_cnn_fidelity(seed, c_in, hw, chans, wbits, abits, per_channel, bn, stride, padding, groups,
                             pool, in_bits):
    try:
        model = random_cnn(seed, c_in, hw, tuple(chans), wbits, abits, per_channel, bn, stride, padding, groups,
                           pool, in_bits)
    except ValueError:
        assume(False)
    x = images(seed, 12, c_in, hw, bipolar=in_bits == 1)
    calibrate_cnn(model, x)
    acc = qloom.compile(model, x)
    rep = acc.fidelity(x)
    assert rep.exact, str(rep)
    assert acc.quantize_input(x).shape[1:] == (hw, hw, c_in)


def test_depthwise_and_strided_conv():
    model = nn.Sequential(qnn.QuantInput(8), qnn.QuantConv2d(4, 4, 3, stride=2, padding=1, groups=4, weight_bits=4),
                          nn.BatchNorm2d(4), qnn.QuantAct(4), nn.Flatten(), qnn.QuantLinear(4 * 4 * 4, 3)).eval()
    x = images(1, 30, 4, 8)
    calibrate_cnn(model, x)
    acc = qloom.compile(model, x)
    conv = acc.graph.nodes[0]
    assert conv.kind == "Conv2d" and conv.groups == 4 and conv.weight.shape == (4, 3, 3, 1)
    assert acc.fidelity(x).exact


def test_flatten_permutes_dense_columns():
    """The IR flattens (H, W, C); torch flattens (C, H, W): the Dense columns follow."""
    model = nn.Sequential(qnn.QuantInput(8), qnn.QuantConv2d(1, 2, 1, bias=False, weight_bits=2), qnn.QuantAct(2),
                          nn.Flatten(), qnn.QuantLinear(2 * 2 * 2, 1, bias=False, weight_bits=4)).eval()
    with torch.no_grad():
        model[4].weight.copy_(torch.arange(8, dtype=torch.float32)[None] - 3)
    x = images(2, 20, 1, 2)
    acc = qloom.compile(model, x)
    dense = acc.graph.nodes[-1]
    codes = model[4].int_weight().numpy()[0]
    # torch column c*4 + h*2 + w sits at IR position (h*2 + w)*2 + c
    assert [int(v) for v in dense.weight[0]] == [int(codes[c * 4 + p]) for p in range(4) for c in range(2)]
    assert acc.fidelity(x).exact


def test_padded_bipolar_conv_needs_pad_value():
    model = nn.Sequential(qnn.QuantInput(1, bipolar=True), qnn.QuantConv2d(2, 2, 3, padding=1, weight_bits=2),
                          qnn.BinaryAct()).eval()
    with pytest.raises(qnn.QuantError, match="pads a bipolar input, which has no zero; give pad_value"):
        qloom.compile(model, torch.randn(4, 2, 5, 5))
    model[1].pad_value = -1
    acc = qloom.compile(model, torch.randn(4, 2, 5, 5))
    assert acc.graph.nodes[0].pad_value == -1


def test_maxpool_before_quantizer_refused():
    model = nn.Sequential(qnn.QuantInput(8), qnn.QuantConv2d(1, 2, 3), nn.MaxPool2d(2), qnn.QuantAct(2))
    with pytest.raises(qnn.QuantError, match="MaxPool2d '2' .* acts on a float accumulator"):
        qloom.compile(model, torch.rand(2, 1, 6, 6))


def test_global_avg_pool_lowers_to_sumpool():
    model = nn.Sequential(qnn.QuantInput(8), qnn.QuantConv2d(3, 4, 3, weight_bits=2), nn.BatchNorm2d(4),
                          qnn.QuantAct(3), nn.AdaptiveAvgPool2d(1), qnn.QuantAct(4, max_val=3.0),
                          nn.Flatten(), qnn.QuantLinear(4, 2)).eval()
    x = images(4, 20, 3, 7)
    calibrate_cnn(model, x)
    acc = qloom.compile(model, x)
    kinds = [n.kind for n in acc.graph.nodes]
    assert kinds == ["Conv2d", "MultiThreshold", "SumPool", "MultiThreshold", "Flatten", "Dense"]
    assert acc.graph.nodes[2].kernel == (5, 5)
    assert acc.fidelity(x).exact
