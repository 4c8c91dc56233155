"""Model families for the int8 importer tests and bench: float digits MLPs/CNNs (trained for a few
seconds on sklearn's 8x8 digits), quantized with PyTorch eager, FX, PT2E (XNNPACK quantizer) and
ONNX Runtime quantize_static (QDQ, QOperator).

A config is a plain dict so seeded random families are easy to draw (`random_config`).
"""
from __future__ import annotations

import contextlib
import functools
import io
import warnings

import numpy as np
import torch
from torch import nn

from qloom.compiler.frontends.torch_int8_fx import engine as _engine

ENGINES = ("fbgemm", "qnnpack")


@functools.lru_cache(maxsize=1)
def digits():
    """(x_train, y_train, x_test, y_test) as float32 / int64 numpy arrays (pixels 0..16)."""
    from qloom.examples import digits as d
    xtr, ytr, xte, yte = d.load()
    return xtr.numpy(), ytr.numpy(), xte.numpy(), yte.numpy()


def boundary_inputs(n: int, seed: int = 0, features: int = 64) -> np.ndarray:
    """Digits-like inputs that hit the quantizers' edges: zeros, the max pixel, past it, negative,
    checkerboards of extremes, and random test images scaled up to 1.5x."""
    rng = np.random.default_rng(seed)
    xte = digits()[2]
    fixed = [np.zeros(features), np.full(features, 16.0), np.full(features, 40.0), np.full(features, -8.0),
             np.where(np.arange(features) % 2 == 0, 0.0, 16.0), np.where(np.arange(features) % 2 == 0, 40.0, -8.0)]
    rest = xte[rng.integers(0, len(xte), n)] * rng.uniform(0.0, 1.5, (n, 1))
    rest += rng.normal(0, 1.0, rest.shape) * (rng.random((n, 1)) < 0.3)
    return np.concatenate([np.array(fixed, dtype=np.float32), rest.astype(np.float32)])[:n]


def test_inputs(n: int = 1000, seed: int = 0) -> np.ndarray:
    """At least n inputs: the whole digits test split plus boundary inputs."""
    xte = digits()[2]
    extra = boundary_inputs(max(n - len(xte), 6), seed)
    return np.concatenate([xte, extra]).astype(np.float32)


# ---------------------------------------------------------------- float models

ACTS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "none": None, "hardtanh": lambda: nn.Hardtanh(-1.0, 2.0)}


def random_config(seed: int, kind: str | None = None) -> dict:
    """A seeded random MLP or CNN configuration."""
    rng = np.random.default_rng(seed)
    kind = kind or ("mlp" if rng.random() < 0.5 else "cnn")
    act = str(rng.choice(["relu", "relu6", "none"]))
    if kind == "mlp":
        hidden = [int(rng.choice([8, 16, 24, 32, 48])) for _ in range(int(rng.integers(1, 3)))]
        return {"kind": "mlp", "hidden": hidden, "act": act, "bn": bool(rng.random() < 0.5), "seed": seed}
    c1 = int(rng.choice([4, 6, 8]))
    groups = int(rng.choice([1, 2])) if c1 % 2 == 0 else 1
    return {"kind": "cnn", "chans": [c1, int(rng.choice([8, 12, 16]))], "stride": int(rng.choice([1, 2])),
            "padding": int(rng.choice([0, 1])), "groups": groups, "pool": str(rng.choice(["max", "avg", "none"])),
            "head": str(rng.choice(["gap", "flatten"])), "act": act, "bn": bool(rng.random() < 0.5), "seed": seed}


def build_float(cfg: dict) -> nn.Module:
    """The float model of a config: input (batch, 64) pixels; CNNs unflatten to (batch, 1, 8, 8) first."""
    torch.manual_seed(cfg["seed"])
    act = ACTS[cfg["act"]]
    layers = []
    if cfg["kind"] == "mlp":
        widths = [64, *cfg["hidden"]]
        for a, b in zip(widths, widths[1:]):
            layers.append(nn.Linear(a, b))
            if cfg["bn"]:
                layers.append(nn.BatchNorm1d(b))
            if act:
                layers.append(act())
        layers.append(nn.Linear(widths[-1], 10))
        return Net(layers, pre=None)
    c1, c2 = cfg["chans"]
    layers += [nn.Conv2d(1, c1, 3, padding=1)]
    layers += [nn.BatchNorm2d(c1)] if cfg["bn"] else []
    layers += [act()] if act else []
    if cfg["pool"] == "max":
        layers.append(nn.MaxPool2d(2))
    elif cfg["pool"] == "avg":
        layers.append(nn.AvgPool2d(2))
    layers += [nn.Conv2d(c1, c2, 3, stride=cfg["stride"], padding=cfg["padding"], groups=cfg["groups"]), nn.ReLU()]
    if cfg["head"] == "gap":
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c2, 10)]
    else:
        hw = 8 if cfg["pool"] == "none" else 4
        hw = (hw + 2 * cfg["padding"] - 3) // cfg["stride"] + 1
        layers += [nn.Flatten(), nn.Linear(c2 * hw * hw, 10)]
    return Net(layers, pre=nn.Unflatten(1, (1, 8, 8)))


class Call(nn.Module):
    """A function called in forward (FX records a call_function node, not a module): `Call(F.max_pool2d, 2)`."""

    def __init__(self, fn, *args, **kwargs):
        super().__init__()
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def forward(self, x):
        return self.fn(x, *self.args, **self.kwargs)


def pool_cnn(pool: nn.Module, seed: int = 0) -> nn.Module:
    """An (untrained) digits CNN: conv 3x3 + ReLU, `pool`, conv 3x3 + ReLU, global average pool, Linear."""
    torch.manual_seed(seed)
    return Net([nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), pool, nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)], pre=nn.Unflatten(1, (1, 8, 8)))


class Net(nn.Module):
    """pre (float reshaping) -> QuantStub -> body -> DeQuantStub; the stubs are identities until converted."""

    def __init__(self, layers, pre=None):
        super().__init__()
        self.pre = pre or nn.Identity()
        self.quant = torch.ao.quantization.QuantStub()
        self.body = nn.Sequential(*layers)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.body(self.quant(self.pre(x))))


def train(model: nn.Module, epochs: int = 12, seed: int = 0) -> nn.Module:
    """A few seconds of Adam on the digits training split (inputs scaled to 0..1)."""
    xtr, ytr, _, _ = digits()
    x, y = torch.from_numpy(xtr), torch.from_numpy(ytr)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def accuracy(out, labels=None) -> float:
    labels = digits()[3] if labels is None else labels
    out = np.asarray(out)
    pred = out.reshape(len(out), -1).argmax(axis=1) if out.ndim > 1 and out.shape[-1] != 1 else out.reshape(-1)
    return float((pred[:len(labels)] == labels).mean())


# ---------------------------------------------------------------- quantization APIs

def _quiet():
    return warnings.catch_warnings()


def fuse_groups(body: nn.Sequential) -> list[list[str]]:
    """Conv/Linear followed by BatchNorm and/or ReLU, as names for fuse_modules (eager)."""
    mods = list(body)
    groups, i = [], 0
    while i < len(mods):
        m = mods[i]
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            g = [str(i)]
            j = i + 1
            if j < len(mods) and isinstance(mods[j], (nn.BatchNorm2d, nn.BatchNorm1d)):
                g.append(str(j))
                j += 1
            if j < len(mods) and type(mods[j]) is nn.ReLU and not (isinstance(m, nn.Linear) and len(g) == 2):
                g.append(str(j))
                j += 1
            if len(g) > 1:
                groups.append(g)
            i = j
        else:
            i += 1
    return groups


def qconfig(engine: str, per_channel: bool):
    from torch.ao.quantization import QConfig, default_per_channel_weight_observer, default_weight_observer, \
        get_default_qconfig
    base = get_default_qconfig(engine)
    return QConfig(activation=base.activation,
                   weight=default_per_channel_weight_observer if per_channel else default_weight_observer)


def quantize_eager(float_model: Net, engine: str, per_channel: bool, calib=None) -> nn.Module:
    """prepare/convert (eager mode), Conv/Linear + BatchNorm + ReLU fused, calibrated on the training split."""
    import copy

    from torch.ao import quantization as tq
    m = copy.deepcopy(float_model).eval()
    calib = digits()[0] if calib is None else calib
    with _quiet(), _engine(engine):
        warnings.simplefilter("ignore")
        groups = fuse_groups(m.body)
        if groups:
            m.body = tq.fuse_modules(m.body, groups)
        m.qconfig = qconfig(engine, per_channel)
        tq.prepare(m, inplace=True)
        with torch.no_grad():
            m(torch.from_numpy(calib))
        tq.convert(m, inplace=True)
    return m


def quantize_fx(float_model: nn.Module, engine: str, per_channel: bool, calib=None) -> nn.Module:
    """prepare_fx/convert_fx with the engine's default mapping (weights per channel or per tensor)."""
    import copy

    from torch.ao.quantization import QConfigMapping, get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    m = copy.deepcopy(float_model).eval()
    calib = digits()[0] if calib is None else calib
    with _quiet(), _engine(engine):
        warnings.simplefilter("ignore")
        mapping = get_default_qconfig_mapping(engine)
        mapping = QConfigMapping.from_dict(mapping.to_dict()).set_global(qconfig(engine, per_channel))
        p = prepare_fx(m, mapping, example_inputs=(torch.from_numpy(calib[:2]),))
        with torch.no_grad():
            p(torch.from_numpy(calib))
        return convert_fx(p)


def quantize_pt2e(float_model: nn.Module, per_channel: bool, calib=None) -> torch.fx.GraphModule:
    """torch.export + torchao prepare_pt2e/convert_pt2e with the XNNPACK quantizer (symmetric int8)."""
    import copy

    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.testing.pt2e._xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
    m = copy.deepcopy(float_model).eval()
    calib = digits()[0] if calib is None else calib
    x = torch.from_numpy(calib)
    with _quiet(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        ep = torch.export.export(m, (x[:4],), dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
        q = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=per_channel))
        p = prepare_pt2e(ep, q)
        with torch.no_grad():
            p(x)
        return convert_pt2e(p)


def export_onnx(float_model: nn.Module, path) -> str:
    """torch.onnx.export(dynamo=False), opset 17, input 'x' (batch, 64), dynamic batch."""
    with _quiet(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(float_model.eval(), (torch.zeros(1, 64),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
    return str(path)


def quantize_onnx(float_path, out_path, fmt: str = "qdq", activation: str = "uint8", weight: str = "int8",
                  per_channel: bool = False, calib=None, **extra) -> str:
    """onnxruntime.quantization.quantize_static, calibrated on the training split."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    calib = digits()[0] if calib is None else calib

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": calib[i:i + 128]} for i in range(0, len(calib), 128)])

        def get_next(self):
            return next(self.it, None)

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    with _quiet(), contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        quantize_static(str(float_path), str(out_path), Reader(),
                        quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                        activation_type=types[activation], weight_type=types[weight], per_channel=per_channel,
                        **extra)
    return str(out_path)
