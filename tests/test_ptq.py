"""Post-training quantization, fine-tuning, sensitivity and bit allocation (qloom.quantize & co)."""
import numpy as np
import pytest
import torch
from torch import nn

import qloom
from qloom import nn as qnn
from qloom.hdl import folding as folding_mod
from qloom.compiler import ptq
from qloom.compiler.nn import QuantError
from qloom.examples import digits

from hw import simulate


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    return digits.load()


@pytest.fixture(scope="module")
def float_mlp(data):
    xtr, ytr, _, _ = data
    torch.manual_seed(0)
    return digits.train(digits.float_mlp(), xtr, ytr, epochs=12)


def float_cnn(relu_after_pool=False):
    act = [nn.MaxPool2d(2), nn.ReLU()] if relu_after_pool else [nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), *act,
                         nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * 2 * 2, 10))


def adversarial(x):
    """The data plus extremes, constants, negative and out-of-range values."""
    k = x.shape[1:]
    top = float(x.max())
    return torch.cat([x, torch.zeros(2, *k), torch.full((2, *k), top), torch.full((2, *k), -3.0),
                      torch.full((2, *k), 3 * top), (torch.rand(8, *k, generator=torch.Generator().manual_seed(0))
                                                     * top).round() + 0.5])


def assert_exact(qm, x_cal, x):
    acc = qloom.compile(qm, x_cal)
    rep = acc.fidelity(adversarial(x))
    assert rep.exact, rep
    return acc


def test_8bit_within_one_point_and_exact(data, float_mlp):
    xtr, ytr, xte, yte = data
    f = digits.accuracy(float_mlp, xte, yte)
    for cal in ptq.CALIBRATIONS:
        qm = qloom.quantize(float_mlp, xtr[:400], weight_bits=8, act_bits=8, calibration=cal)
        a = ptq.accuracy(qm, xte, yte)
        assert a >= f - 0.01, (cal, a, f)
        assert_exact(qm, xtr[:200], xte)


def test_structure(float_mlp, data):
    qm = qloom.quantize(float_mlp, data[0][:300], 4, 3)
    kinds = [type(m).__name__ for m in qm.children()]
    assert kinds == ["QuantInput", "QuantLinear", "BatchNorm1d", "QuantAct", "QuantLinear", "BatchNorm1d",
                     "QuantAct", "QuantLinear"]
    acts = [m for m in qm.children() if isinstance(m, qnn.QuantAct)]
    assert all(not a.learnable and not a.qtype.signed and a.qtype.bits == 3 for a in acts)
    lin = [m for m in qm.children() if isinstance(m, qnn.QuantLinear)]
    assert all(m.weight_bits == 4 and m.per_channel for m in lin)
    assert torch.equal(lin[0].weight, float_mlp[0].weight) and torch.equal(lin[0].bias, float_mlp[0].bias)
    assert qm.input.qtype.bits == 8 and not qm.input.qtype.signed
    assert abs(float(qm.input.scale) - 16 / 255) < 1e-7      # digits pixels are 0..16


@pytest.mark.parametrize("wbits,abits,cal,scale,per_channel", [
    (8, 8, "minmax", "pow2", False), (4, 4, "percentile", "float", True), (3, 2, "mse", "pow2", True),
    (2, 2, "mse", "float", False), ("ternary", 1, "minmax", "float", True), ("bipolar", 3, "percentile", "pow2", True),
    (6, 10, "minmax", "float", True)])
def test_every_option_exact(float_mlp, data, wbits, abits, cal, scale, per_channel):
    xtr, _, xte, _ = data
    qm = qloom.quantize(float_mlp, xtr[:300], wbits, abits, calibration=cal, scale=scale, per_channel=per_channel)
    assert_exact(qm, xtr[:100], xte)
    if scale == "pow2":
        for a in (m for m in qm.children() if isinstance(m, qnn.QuantAct)):
            s = float(a.scale())
            assert abs(np.log2(s) - round(np.log2(s))) < 1e-5


def test_mixed_precision_dict(float_mlp, data):
    qm = qloom.quantize(float_mlp, data[0][:300], weight_bits={"0": 8, "3": "ternary", "default": 4},
                        act_bits={"2": 6, "3": 3})            # a ReLU's path, or its layer's path
    lin = [m for m in qm.children() if isinstance(m, qnn.QuantLinear)]
    assert [m.weight_bits for m in lin] == [8, "ternary", 4]
    assert [m.qtype.bits for m in qm.children() if isinstance(m, qnn.QuantAct)] == [6, 3]
    assert qm.qloom_ptq["weight_bits"] == {"0": 8, "3": "ternary", "6": 4}
    assert_exact(qm, data[0][:100], data[2])


def test_cnn_and_commuted_relu(data):
    xtr, ytr, xte, yte = data
    img, imt = xtr.reshape(-1, 1, 8, 8), xte.reshape(-1, 1, 8, 8)
    for relu_after_pool in (False, True):
        torch.manual_seed(0)
        fm = digits.train(float_cnn(relu_after_pool), img[:600], ytr[:600], epochs=3, batch=128)
        f = digits.accuracy(fm, imt, yte)
        qm = qloom.quantize(fm, img[:300], 8, 8)
        assert ptq.accuracy(qm, imt, yte) >= f - 0.02
        kinds = [type(m).__name__ for m in qm.children()]
        assert kinds[:5] == ["QuantInput", "QuantConv2d", "BatchNorm2d", "QuantAct", "MaxPool2d"]
        assert not qm[3].qtype.signed
        assert_exact(qm, img[:64], imt[:100])
        assert_exact(qloom.quantize(fm, img[:300], 3, 4, scale="pow2", calibration="mse"), img[:64], imt[:100])


def test_signed_activation_inserted_and_extras():
    """Linear -> Linear without ReLU gets a signed quantizer; dropout/identity drop; nested Sequential;
    batch norm after the last layer; signed inputs give a signed QuantInput."""
    torch.manual_seed(1)
    fm = nn.Sequential(nn.Sequential(nn.Linear(12, 16), nn.Dropout(0.1), nn.Identity()),
                       nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 5), nn.BatchNorm1d(5)).eval()
    with torch.no_grad():
        fm[2].running_mean.normal_()
        fm[5].weight.normal_()
    x = torch.randn(200, 12)
    qm = qloom.quantize(fm, x, 4, 4)
    kinds = [type(m).__name__ for m in qm.children()]
    assert kinds == ["QuantInput", "QuantLinear", "QuantAct", "QuantLinear", "BatchNorm1d", "QuantAct",
                     "QuantLinear", "BatchNorm1d"]
    assert qm.input.qtype.signed and qm[2].qtype.signed and not qm[5].qtype.signed
    assert_exact(qm, x[:50], x)
    out_f = fm(x)
    out_q = qm(x)
    assert ptq.sqnr_db(out_f, out_q) > 10


def test_errors_name_the_module():
    with pytest.raises(QuantError, match=r"'1'.*Sigmoid"):
        qloom.quantize(nn.Sequential(nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 2)), torch.rand(8, 4))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x)
    with pytest.raises(QuantError, match="nn.Sequential"):
        qloom.quantize(nn.Sequential(Net()), torch.rand(8, 4))
    with pytest.raises(QuantError, match="calibration"):
        qloom.quantize(nn.Sequential(nn.Linear(4, 2)), torch.rand(8, 4), calibration="kl")
    with pytest.raises(QuantError, match="weight_bits"):
        qloom.quantize(nn.Sequential(nn.Linear(4, 2)), torch.rand(8, 4), weight_bits=9)


def test_calibrate_range():
    y = torch.cat([torch.linspace(0, 1, 100_000), torch.tensor([50.0])])
    assert ptq.calibrate_range(y, 4, False, "minmax") == pytest.approx(50)
    assert ptq.calibrate_range(y, 4, False, "percentile", percentile=99) < 1.5
    assert ptq.calibrate_range(y, 4, False, "mse") < 50
    assert ptq.calibrate_range(-y, 4, False, "minmax") == 1.0          # nothing positive: any range
    assert ptq.calibrate_range(-y, 4, True, "minmax") == pytest.approx(50)
    m = ptq.calibrate_range(y, 4, False, "minmax", pow2=True)
    assert m >= 50 and np.log2(m / 15) == round(np.log2(m / 15))


def test_finetune_improves_2bit_and_stays_exact(float_mlp, data):
    xtr, ytr, xte, yte = data
    qm = qloom.quantize(float_mlp, xtr[:300], 2, 2, calibration="mse")
    before = ptq.accuracy(qm, xtr, ytr)
    ranges = [float(m.max_val) for m in qm.modules() if isinstance(m, qnn.QuantAct)]
    qloom.finetune(qm, (xtr, ytr), epochs=3)
    assert ptq.accuracy(qm, xtr, ytr) > before
    assert ranges == [float(m.max_val) for m in qm.modules() if isinstance(m, qnn.QuantAct)]
    assert_exact(qm, xtr[:100], xte)
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xtr[:256], ytr[:256]), batch_size=64)
    qloom.finetune(qm, dl, epochs=1)
    assert not qm.training


def test_sensitivity_and_allocation(float_mlp, data):
    xtr, ytr, xte, yte = data
    ev = (xtr[-300:], ytr[-300:])
    sens = qloom.sensitivity(float_mlp, xtr[:300], ev, bits=(4, 2))
    t = sens.table("weight")
    assert set(t) == {"0", "3", "6"} and all(set(v) == {4, 2} for v in t.values())
    assert set(sens.table("act")) == {"0", "3"}
    assert "layer" in str(sens)
    s = qloom.sensitivity(float_mlp, xtr[:300], ev[0], bits=(2,), metric="sqnr", what=("weight",))
    assert all(r["value"] < s.base_value for r in s.rows)
    al = qloom.allocate_bits(float_mlp, xtr[:300], ev, budget=0.01, candidates=(8, 4, 3, 2), uniform=(4, 2))
    assert al.value >= al.float_value - 0.01 - 1e-12
    assert al.total_weight_bits <= al.uniform[4][1] or al.uniform[4][0] < al.target
    assert al.total_weight_bits == sum(al.n_weights[k] * ptq.metrics._bits_num(b) for k, b in al.weight_bits.items())
    assert ptq.accuracy(al.model, *ev) == pytest.approx(al.value)
    assert "allocated" in str(al)
    assert_exact(al.model, xtr[:100], xte)


def test_ptq_model_hardware_bit_exact(data):
    """A PTQ model (4-bit weights, 3-bit activations) in amaranth.sim with a small folding and stalls."""
    xtr, ytr, xte, _ = data
    torch.manual_seed(0)
    fm = digits.train(digits.float_mlp(hidden=(16,)), xtr, ytr, epochs=5)
    qm = qloom.quantize(fm, xtr[:300], 4, 3)
    acc = qloom.compile(qm, xtr[:100])
    f = folding_mod.fold(acc.graph, target_ii=16)
    xi = acc.quantize_input(xte[:12])
    got = simulate(acc.graph, f, xi, stall_in=0.3, stall_out=0.3, seed=3)
    assert (got == acc.reference(xi)).all()


def test_average_pools_get_a_quantizer():
    torch.manual_seed(0)
    fm = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),
                       nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                       nn.Linear(6, 4)).eval()
    x = torch.rand(40, 3, 10, 10)
    qm = qloom.quantize(fm, x, 4, {"3": 6, "default": 4})
    names = [n for n, _ in qm.named_children()]
    assert names[names.index("3") + 1] == "3_act" and qm.get_submodule("3_act").qtype.bits == 6
    assert names[names.index("6") + 1] == "6_act"
    assert_exact(qm, x[:10], x)
    assert ptq.sqnr_db(fm(x), qm(x)) > 20


@pytest.mark.slow
def test_ptq_cnn_hardware_bit_exact(data):
    """A PTQ digits CNN (4-bit weights, 4-bit activations) in amaranth.sim, folded to II 256."""
    xtr, ytr, xte, _ = data
    img = xtr.reshape(-1, 1, 8, 8)
    torch.manual_seed(0)
    fm = digits.train(float_cnn(), img[:600], ytr[:600], epochs=3, batch=128)
    qm = qloom.quantize(fm, img[:300], 4, 4)
    acc = qloom.compile(qm, img[:64])
    f = folding_mod.fold(acc.graph, target_ii=256)
    xi = acc.quantize_input(xte[:6].reshape(-1, 1, 8, 8))
    assert (simulate(acc.graph, f, xi, seed=4) == acc.reference(xi)).all()
