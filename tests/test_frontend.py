"""Torch eval == IR, every element of every output, for random quantized MLPs."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import qloom
from qloom import nn as qnn
from qloom.compiler import ir

from mlps import calibrate, inputs, random_mlp

WBITS = ["bipolar", "ternary", 2, 3, 4, 8]
ABITS = [1, 2, 4, 8]


def check_exact(model, x):
    acc = qloom.compile(model, x)
    rep = acc.fidelity(x)
    assert rep.exact, str(rep)
    assert rep.elements == x.shape[0] * acc.graph.output_type.size
    return acc


def make_inputs(seed, n, k, in_bits, pow2):
    if in_bits == 1:
        g = torch.Generator().manual_seed(seed)
        return torch.cat([torch.randn(n, k, generator=g), torch.zeros(1, k), -torch.ones(1, k)])
    return inputs(seed, n, k, in_bits, pow2)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), depth=st.integers(1, 4),
       widths=st.lists(st.integers(1, 256), min_size=5, max_size=5),
       wbits=st.sampled_from(WBITS), abits=st.sampled_from(ABITS), per_channel=st.booleans(),
       bn=st.booleans(), gamma=st.sampled_from(["positive", "mixed"]), pow2=st.booleans(),
       in_bits=st.sampled_from([1, 2, 8]), final_act=st.booleans())
def test_random_mlp_fidelity(seed, depth, widths, wbits, abits, per_channel, bn, gamma, pow2, in_bits,
                             final_act):
    w = [max(1, v // (1 if i == 0 else 2)) for i, v in enumerate(widths[:depth + 1])]
    model = random_mlp(seed, w, wbits, abits, per_channel, bn, gamma, pow2, in_bits, final_act)
    x = make_inputs(seed, 40, w[0], in_bits, pow2)
    calibrate(model, x)
    check_exact(model, x)


SWEEP = [(s, wb, ab) for s, (wb, ab) in enumerate((wb, ab) for wb in WBITS for ab in ABITS)]


@pytest.mark.parametrize("seed,wbits,abits", SWEEP)
def test_seeded_sweep(seed, wbits, abits):
    """Every weight kind x activation width, per-channel and batch norm with mixed gammas."""
    rng = np.random.default_rng(seed)
    widths = [int(rng.integers(8, 257))] + [int(rng.integers(1, 129)) for _ in range(int(rng.integers(1, 4)))]
    for pc, bn, pow2 in [(True, True, False), (False, False, True), (True, True, True)]:
        model = random_mlp(seed, widths, wbits, abits, pc, bn, "mixed", pow2, final_act=seed % 2 == 0)
        x = inputs(seed, 100, widths[0], 8, pow2)
        calibrate(model, x)
        check_exact(model, x)


def test_negative_and_zero_gamma_channels():
    model = random_mlp(3, [16, 12, 5], 4, 4, True, True, "positive", final_act=True)
    bn = model[2]
    with torch.no_grad():
        bn.weight[:4] = -bn.weight[:4].abs()
        bn.weight[4:6] = 0
    x = inputs(3, 200, 16)
    acc = check_exact(model, x)
    mt = [n for n in acc.graph.nodes if isinstance(n, ir.MultiThreshold)][0]
    dense = acc.graph.nodes[0]
    # negative channels run on negated weights; zero channels are constant
    lin_codes = model[1].int_weight().numpy()
    assert (dense.weight[:4] == -lin_codes[:4]).all() and (dense.weight[6:] == lin_codes[6:]).all()
    out = acc.reference(acc.quantize_input(x), return_all=True)[mt.output]
    assert (out[:, 4] == out[0, 4]).all() and (out[:, 5] == out[0, 5]).all()
    assert mt.thresholds.shape == (12, 15)


def test_negated_minimum_weight_widens_type():
    """-(-8) does not fit int4: the IR's weight type grows by one bit, still exact."""
    class FullRange(qnn.QuantLinear):          # codes that use -8 (e.g. an imported model)
        def quant_weight(self):
            return torch.tensor([[-8.0, 3, 2, 1], [7, -3, 2, -8]]), torch.full((2, 1), 0.125)

    lin = FullRange(4, 2, bias=False, weight_bits=4, narrow_range=False)
    bn = nn.BatchNorm1d(2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[-1.0, 0.5, 0.2, 0.1], [1.0, -0.3, 0.2, 0.9]]))
        bn.weight.copy_(torch.tensor([-1.0, 1.0]))
    model = nn.Sequential(qnn.QuantInput(4, False, 1 / 15), lin, bn, qnn.QuantAct(3, max_val=2.0)).eval()
    x = torch.rand(300, 4)
    acc = check_exact(model, x)
    assert acc.graph.nodes[0].wtype == ir.Int(5, True)
    assert acc.graph.nodes[0].weight[0, 0] == 8


def test_accumulator_width_is_minimal():
    lin = qnn.QuantLinear(3, 1, bias=False, weight_bits=3, narrow_range=True)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -1.0, 0.5]]))      # codes 3, -3, 2 (narrow 3-bit)
    model = nn.Sequential(qnn.QuantInput(2, False, 1 / 3), lin).eval()
    acc = qloom.compile(model, torch.rand(10, 3))
    assert acc.graph.nodes[0].weight.tolist() == [[3, -3, 2]]
    # inputs 0..3: acc in [-9, 15] -> int5
    assert acc.graph.output_type.dtype == ir.Int(5, True)


def test_ties_follow_torch_round_half_even():
    """y/s lands exactly on .5: thresholds must reproduce torch.round's half-to-even choice."""
    lin = qnn.QuantLinear(1, 1, bias=False, weight_bits=2, scale="pow2")
    with torch.no_grad():
        lin.weight.fill_(1.0)                                # code 1, scale 1
    act = qnn.QuantAct(4, max_val=15 * 2.0, learnable=False)  # s = 2: y = acc, code = round(acc / 2)
    model = nn.Sequential(qnn.QuantInput(8, False, 1.0), lin, act).eval()
    x = torch.arange(0, 40, dtype=torch.float32)[:, None]
    acc = check_exact(model, x)
    got = acc.reference(acc.quantize_input(x))[:, 0]
    assert list(got[:8]) == [0, 0, 1, 2, 2, 2, 3, 4]       # 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, 3.5 -> 4


def test_requantize_fidelity_is_measured():
    model = random_mlp(7, [32, 16, 8], 4, 8, True, True, "mixed", final_act=True)
    x = inputs(7, 200, 32)
    calibrate(model, x)
    acc = qloom.compile(model, x, requantize=True)
    kinds = [n.kind for n in acc.graph.nodes]
    assert "Requantize" in kinds and "MultiThreshold" not in kinds
    rep = acc.requantize_fidelity
    assert rep.elements == x.shape[0] * 8 and rep.fidelity > 0.9
    assert rep.max_lsb <= 1 or rep.mismatches == 0
    assert str(rep).startswith("fidelity")


def test_argmax_on_quantized_outputs_matches_torch():
    model = random_mlp(11, [20, 16, 10], 2, 2, False, True, "mixed", final_act=True)
    x = inputs(11, 300, 20)
    calibrate(model, x)
    acc = qloom.compile(model, x, argmax=True)
    assert acc.graph.nodes[-1].kind == "ArgMax"
    rep = acc.fidelity(x)
    assert rep.exact and rep.compared == "labels"


def test_argmax_refused_on_biased_float_tail():
    model = random_mlp(12, [20, 10], 2, 2, False, False, final_act=False, bias=True)
    with pytest.raises(qnn.QuantError, match="argmax=True.*bias"):
        qloom.compile(model, torch.rand(5, 20), argmax=True)


# ---------------------------------------------------------------- bad input

def test_unsupported_module_is_named():
    model = nn.Sequential(qnn.QuantInput(8), qnn.QuantLinear(4, 4), nn.Sigmoid(), qnn.QuantAct(2))
    with pytest.raises(qnn.QuantError, match=r"'2' \(torch\.nn\.modules\.activation\.Sigmoid\).*supported: QuantInput"):
        qloom.compile(model, torch.rand(3, 4))


def test_float_tensor_into_quantized_layer_is_refused():
    model = nn.Sequential(qnn.QuantInput(8), qnn.QuantLinear(4, 4), nn.BatchNorm1d(4), qnn.QuantLinear(4, 2))
    with pytest.raises(qnn.QuantError, match="unquantized float tensor"):
        qloom.compile(model, torch.rand(3, 4))


def test_model_without_quant_input_is_refused():
    model = nn.Sequential(nn.Flatten(), qnn.QuantLinear(4, 2))
    with pytest.raises(qnn.QuantError, match="unquantized float tensor"):
        qloom.compile(model, torch.rand(3, 4))


def test_bad_layer_options_name_the_value():
    with pytest.raises(qnn.QuantError, match="weight_bits must be one of .* got 9"):
        qnn.QuantLinear(4, 4, weight_bits=9)
    with pytest.raises(qnn.QuantError, match="bits must be an integer in 1..16, got 0"):
        qnn.QuantAct(0)
    with pytest.raises(qnn.QuantError, match="zero_point 300 is outside"):
        qnn.QuantInput(8, zero_point=300)


def test_input_zero_point_and_signed_input():
    lin = qnn.QuantLinear(6, 5, weight_bits=3, per_channel=True)
    model = nn.Sequential(qnn.QuantInput(6, signed=True, scale=0.05, zero_point=3), lin, nn.BatchNorm1d(5),
                          qnn.QuantAct(3, signed=True, max_val=2.0, learnable=False)).eval()
    x = torch.randn(500, 6) * 2
    calibrate(model, x)
    check_exact(model, x)


def test_training_mode_trains_and_eval_stays_exact():
    torch.manual_seed(0)
    model = nn.Sequential(qnn.QuantInput(8), qnn.QuantLinear(16, 32, weight_bits=2), nn.BatchNorm1d(32),
                          qnn.QuantAct(2), qnn.QuantLinear(32, 4, weight_bits=2))
    x = torch.rand(256, 16)
    y = (x[:, :4].argmax(1))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    model.train()
    losses = []
    for _ in range(60):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    assert model[1].weight.grad is not None and model[3].max_val.grad is not None
    check_exact(model.eval(), x)
