"""The torch front end on graph-shaped models: residual adds (QuantAdd, +, torch.add), concatenation, depthwise
convs; exact by construction (checked on every output element), and clear refusals otherwise."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import qloom
from qloom import nn as qnn
from qloom.compiler import ir
from qloom.compiler.errors import QuantError
from qloom.examples.resnet import seeded
from qloom.hdl import folding

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def images(n=48, c=2, hw=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.rand(n, c, hw, hw, generator=g), (torch.rand(n, c, hw, hw, generator=g) < 0.5).float()])


class Residual(nn.Module):
    """QuantInput -> conv/BN/act -> [conv/BN/q | identity] -> add -> tail -> act (the add written as `how`)."""

    def __init__(self, how="module", skip_max=2.0, main_max=4.0, tail=("relu",), wbits=2, abits=2):
        super().__init__()
        self.inp = qnn.QuantInput(8, scale=1 / 255)
        self.c0 = qnn.QuantConv2d(2, 4, 3, padding=1, bias=False, weight_bits=wbits)
        self.b0, self.a0 = nn.BatchNorm2d(4), qnn.QuantAct(abits, max_val=skip_max, learnable=False, scale="pow2")
        self.c1 = qnn.QuantConv2d(4, 4, 3, padding=1, bias=True, weight_bits=wbits, per_channel=True)
        self.b1 = nn.BatchNorm2d(4)
        self.q1 = qnn.QuantAct(abits + 1, signed=True, max_val=main_max, learnable=False, scale="pow2")
        self.add, self.how = qnn.QuantAdd(), how
        self.bn = nn.BatchNorm2d(4) if "bn" in tail else nn.Identity()
        self.relu = "relu" in tail
        self.out = qnn.QuantAct(abits, max_val=3.0, learnable=False)

    def forward(self, x):
        x = self.a0(self.b0(self.c0(self.inp(x))))
        y = self.q1(self.b1(self.c1(x)))
        s = self.add(y, x) if self.how == "module" else y + x if self.how == "operator" else torch.add(y, x)
        s = self.bn(s)
        return self.out(F.relu(s) if self.relu else s)


def compiled(model, x, gamma=None):
    """Seeded weights and calibrated ranges; then the batch norm after the add gets `gamma` (if given)."""
    model = seeded(model, x, seed=1)
    if gamma is not None:
        with torch.no_grad():
            model.bn.weight.copy_(torch.tensor(gamma, dtype=torch.float32))
    return qloom.compile(model, x), model


@pytest.mark.parametrize("how", ["module", "operator", "torch.add"])
@pytest.mark.parametrize("skip_max,main_max", [(2.0, 4.0), (3.0, 0.5), (1.0, 1.0)])
def test_residual_add_is_exact(how, skip_max, main_max):
    x = images()
    acc, model = compiled(Residual(how, skip_max, main_max), x)
    add = next(n for n in acc.graph.nodes if isinstance(n, ir.Add))
    # the scales are powers of two: the coefficients are their ratio
    s_main, s_skip = float(model.q1.scale()), float(model.a0.scale())
    assert add.coeffs == ((int(s_main / s_skip), 1) if s_main >= s_skip else (1, int(s_skip / s_main)))
    rep = acc.fidelity(images(200, seed=5))
    assert rep.exact and rep.elements == 200 * 2 * 4 * 36


def test_batch_norm_after_the_add_and_no_relu():
    x = images()
    acc, _ = compiled(Residual(tail=("bn",)), x, gamma=[0.5, 1.0, 2.0, 0.1])
    assert acc.fidelity(images(100, seed=6)).exact


def test_decreasing_tail_after_the_add_is_refused():
    x = images()
    with pytest.raises(QuantError, match="after the residual add 'add' decreases in some channels"):
        compiled(Residual(tail=("bn", "relu")), x, gamma=[0.5, -1.0, 2.0, 1.0])


def test_scales_that_are_no_power_of_two_apart_are_refused():
    x = images()
    model = Residual()
    model.a0 = qnn.QuantAct(2, max_val=2.0, learnable=False)          # float scale 2/3
    with pytest.raises(QuantError, match=r"failed in module 'add'.*ratio .* is not a power of two.*scale='pow2'"):
        compiled(model, x)


def test_an_unquantized_branch_is_refused():
    class Bad(Residual):
        def forward(self, x):
            x = self.a0(self.b0(self.c0(self.inp(x))))
            return self.out(self.add(self.b1(self.c1(x)), x))

    with pytest.raises(QuantError, match="input 0 is an unquantized Tensor"):
        compiled(Bad(), images())


def test_a_float_accumulator_with_two_consumers_is_refused():
    class Bad(Residual):
        def forward(self, x):
            a = self.b0(self.c0(self.inp(x)))
            return self.add(self.a0(a), self.q1(a))

    with pytest.raises(QuantError, match="float output of 'c0' .* feeds several operations"):
        compiled(Bad(), images())


class Inception(nn.Module):
    def __init__(self, shared=True):
        super().__init__()
        self.inp = qnn.QuantInput(8, scale=1 / 255)
        self.c3 = qnn.QuantConv2d(2, 4, 3, padding=1, bias=False, weight_bits=2)
        self.c1 = qnn.QuantConv2d(2, 2, 1, bias=False, weight_bits=2)
        self.b3, self.b1 = nn.BatchNorm2d(4), nn.BatchNorm2d(2)
        self.q = qnn.QuantAct(2, max_val=2.0, learnable=False)
        self.q_other = self.q if shared else qnn.QuantAct(2, max_val=1.0, learnable=False)
        self.pool, self.flat = nn.MaxPool2d(2), nn.Flatten()
        self.fc = qnn.QuantLinear(6 * 3 * 3, 5, weight_bits=2)

    def forward(self, x):
        x = self.inp(x)
        y = torch.cat([self.q(self.b3(self.c3(x))), self.q_other(self.b1(self.c1(x)))], dim=1)
        return self.fc(self.flat(self.pool(y)))


def test_concat_of_branches_with_one_quantizer_is_exact():
    x = images()
    acc, _ = compiled(Inception(), x)
    cat = next(n for n in acc.graph.nodes if isinstance(n, ir.Concat))
    assert [n.name for n in acc.graph.nodes if isinstance(n, ir.MultiThreshold)] == ["q", "q@1"]
    assert cat.inputs == ["q:out", "q@1:out"]
    assert acc.fidelity(images(100, seed=7)).exact


def test_concat_of_different_scales_is_refused():
    with pytest.raises(QuantError, match="torch.cat: input 1 has scale .* one scale"):
        compiled(Inception(shared=False), images())


def test_depthwise_conv_goes_to_the_vector_unit():
    model = nn.Sequential(qnn.QuantInput(8, scale=1 / 255),
                          qnn.QuantConv2d(2, 4, 3, padding=1, bias=False, weight_bits=4), nn.BatchNorm2d(4),
                          qnn.QuantAct(2, learnable=False),
                          qnn.QuantConv2d(4, 4, 3, padding=1, groups=4, bias=False, weight_bits=4), nn.BatchNorm2d(4),
                          qnn.QuantAct(2, learnable=False))
    x = images()
    acc, _ = compiled(model, x)
    assert acc.fidelity(images(100, seed=8)).exact
    kinds = [s.kind for s in folding.plan(acc.graph, folding.fold(acc.graph))]
    assert kinds.count("vvu") == 1 and kinds.count("mvu") == 1


def test_an_unused_branch_needs_no_node():
    class Dead(Residual):
        def forward(self, x):
            x = self.a0(self.b0(self.c0(self.inp(x))))
            self.q1(self.b1(self.c1(x)))                    # computed, never used
            return x

    acc, _ = compiled(Dead(), images())
    assert [n.name for n in acc.graph.nodes] == ["c0", "a0"]


def test_training_through_the_add():
    model = Residual().train()
    x = images(8)
    out = model(x)
    loss = out.value.square().mean()
    loss.backward()
    assert model.c1.weight.grad is not None and model.c0.weight.grad.abs().sum() > 0
    assert np.isfinite(float(loss.detach()))
