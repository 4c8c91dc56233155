"""requantize and argmax are exact or refused, never silently wrong (issue #18's findings, as tests)."""
import numpy as np
import pytest
import torch
from torch import nn

import qloom
from qloom import nn as qnn
from qloom.compiler.errors import QuantError
from qloom.compiler.frontends.torch_nn import float32_injective

from mlps import calibrate, inputs, random_mlp


def _relu_before_bn(seed=0, k=24, n=12, abits=8):
    g = torch.Generator().manual_seed(seed)
    lin = qnn.QuantLinear(k, n, bias=True, weight_bits=4, per_channel=True)
    bn = nn.BatchNorm1d(n)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=g) / k ** 0.5)
        bn.weight.copy_(torch.randn(n, generator=g))            # negative gammas too
        bn.bias.copy_(torch.randn(n, generator=g))
        bn.running_mean.copy_(torch.rand(n, generator=g))
        bn.running_var.copy_(torch.rand(n, generator=g) + 0.1)
    return nn.Sequential(qnn.QuantInput(8, False, 1 / 255), lin, nn.ReLU(), bn,
                         qnn.QuantAct(abits, signed=True, max_val=3.0, learnable=False)).eval()


def test_requantize_honours_a_relu_before_batch_norm():
    """The old approximation dropped every ReLU: 51% of codes right. Now exact, or thresholds kept."""
    model = _relu_before_bn()
    x = torch.rand(500, 24)
    acc = qloom.compile(model, x, requantize=True)
    assert acc.check_fidelity.exact
    assert acc.fidelity(torch.rand(2000, 24)).exact


def test_requantize_with_a_huge_gain_ratio_between_channels():
    """One shift for all channels used to give low-gain channels a zero multiplier (127 LSB off)."""
    model = random_mlp(3, [16, 8], 4, 8, True, True, "mixed", final_act=True)
    calibrate(model, inputs(3, 200, 16))
    with torch.no_grad():
        model[2].weight[0] *= 1e4                                  # batch-norm gamma of channel 0
        model[2].weight[1] *= 1e-3
    x = inputs(4, 500, 16)
    acc = qloom.compile(model, x, requantize=True)
    assert acc.fidelity(x).exact
    layers = acc.frontend.describe()["layers"]
    assert layers and all(r["method"] in ("requantize", "thresholds") for r in layers)


def test_requantize_uses_fixed_point_where_exact():
    for seed in range(4):
        model = random_mlp(seed, [32, 16, 8], 4, 8, True, True, "mixed", final_act=True)
        x = inputs(seed, 300, 32)
        calibrate(model, x)
        acc = qloom.compile(model, x, requantize=True)
        kinds = [n.kind for n in acc.graph.nodes]
        methods = [r["method"] for r in acc.frontend.describe()["layers"]]
        assert kinds.count("Requantize") == methods.count("requantize") > 0
        assert acc.fidelity(x).exact


# ---------------------------------------------------------------- argmax on float outputs

def test_float32_injectivity_rule_is_sound():
    rng = np.random.default_rng(0)
    for _ in range(200):
        m = float(np.float32(10 ** rng.uniform(-7, 0)))
        maxabs = int(rng.integers(1, 1 << 21))
        y = np.arange(-maxabs, maxabs + 1).astype(np.float32) * np.float32(m)
        if float32_injective(m, maxabs):
            assert (np.diff(y) > 0).all()


def _float_head(scale, k=64, n=10, wbits=8, ones=False):
    lin = qnn.QuantLinear(k, n, bias=False, weight_bits=wbits)
    model = nn.Sequential(qnn.QuantInput(8, False, scale), lin).eval()
    with torch.no_grad():
        w = torch.randn(n, k, generator=torch.Generator().manual_seed(1))
        lin.weight.copy_(torch.ones_like(w) if ones else w)     # all +1: every code 127, the widest sums
    return model


def test_argmax_refused_where_float32_merges_accumulators():
    """Below 2**24 (the old limit) but with a scale whose float32 spacing at the largest accumulator
    (400 * 127 * 255 ~ 1.3e7) exceeds the scale: distinct accumulators can share a float32 value."""
    m = 1.5 * 2 ** -11                                           # the Dense's float scale: in_scale / 127
    model = _float_head(m * 127, k=400, ones=True)
    assert not float32_injective(float(np.float32(m)), 400 * 127 * 255) and 400 * 127 * 255 < 2 ** 24
    with pytest.raises(QuantError, match="float32 cannot keep apart"):
        qloom.compile(model, torch.rand(16, 400) * 20, argmax=True)


def test_argmax_accepted_where_float32_is_injective_and_equal_to_torch():
    model = _float_head(1 / 255)
    x = torch.rand(2000, 64)
    acc = qloom.compile(model, x, argmax=True)
    rep = acc.fidelity(x)
    assert rep.exact and rep.compared == "labels"


def test_argmax_refusal_names_the_cause():
    lin = qnn.QuantLinear(8, 4, bias=True, weight_bits=4)
    model = nn.Sequential(qnn.QuantInput(8, False, 1 / 255), lin).eval()
    with pytest.raises(QuantError, match=r"it has a bias;"):
        qloom.compile(model, torch.rand(16, 8), argmax=True)
    lin2 = qnn.QuantLinear(8, 4, bias=False, weight_bits=4, per_channel=True)
    model2 = nn.Sequential(qnn.QuantInput(8, True, 1 / 127, zero_point=3), lin2).eval()
    with pytest.raises(QuantError, match="zero point.*per-channel weight scales"):
        qloom.compile(model2, torch.rand(16, 8), argmax=True)


def test_argmax_after_global_pool_without_flatten():
    conv = qnn.QuantConv2d(1, 6, 3, bias=False, weight_bits=4)
    model = nn.Sequential(qnn.QuantInput(4, False, 1 / 15), conv, nn.BatchNorm2d(6), qnn.QuantAct(3),
                          nn.AdaptiveAvgPool2d(1), qnn.QuantAct(4)).eval()
    x = torch.rand(64, 1, 6, 6)
    acc = qloom.compile(model, x, argmax=True)
    assert acc.graph.output_type.shape == (1,)
    assert acc.fidelity(x).exact


def test_batch_norm_without_running_stats_is_refused():
    model = nn.Sequential(qnn.QuantInput(8, False, 1 / 255), qnn.QuantLinear(8, 4, weight_bits=4),
                          nn.BatchNorm1d(4, track_running_stats=False), qnn.QuantAct(2)).eval()
    with pytest.raises(QuantError, match="track_running_stats=False"):
        qloom.compile(model, torch.rand(16, 8))


def test_predict_gives_the_source_layout():
    conv = qnn.QuantConv2d(2, 3, 3, padding=1, bias=False, weight_bits=4)
    model = nn.Sequential(qnn.QuantInput(4, False, 1 / 15), conv, nn.BatchNorm2d(3), qnn.QuantAct(3)).eval()
    x = torch.rand(8, 2, 5, 5)
    acc = qloom.compile(model, x)
    with torch.no_grad():
        want = model(x).value.numpy()
    got = acc.predict(x)
    assert got.shape == want.shape == (8, 3, 5, 5) and np.array_equal(got, want)
    assert acc.reference(acc.quantize_input(x)).shape == (8, 5, 5, 3)          # the IR: channels-last
