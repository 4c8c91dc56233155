# amaranth: UnusedElaboratable=no
"""qloom.sim: cocotb on Verilator and Icarus, bit-exact against the reference, both drivers.

Verilator builds take 10-40 s each, so builds are shared: every test goes through
`sim()` below, which memoises results per (build dir, arguments), and every
simulator build lands in one module-wide cache dir. Default run: 4 Verilator
builds (the MLP and a planted-fault copy of a Dense layer, x harness / per-cycle).
"""
import json
import pathlib
import sys

import numpy as np
import pytest

import qloom
from qloom.cli import main as cli
from qloom.hdl import folding as folding_mod
from qloom.compiler import ir, reference
from qloom.examples import tfc
from qloom.hdl import emit, streams
from qloom.sim import available, faults, run, service, simulate

ICARUS, ICARUS_WHY = available("icarus")
VERILATOR, VERILATOR_WHY = available("verilator")
needs_icarus = pytest.mark.skipif(not ICARUS, reason=f"Icarus not available: {ICARUS_WHY}")
needs_verilator = pytest.mark.skipif(not VERILATOR, reason=f"Verilator not available: {VERILATOR_WHY}")
DRIVERS = ["harness", "cocotb"]

_memo = {}


def sim(build_dir, **kw):
    key = (str(build_dir), tuple(sorted(kw.items())))
    if key not in _memo:
        _memo[key] = simulate(build_dir, **kw)
    return _memo[key]


@pytest.fixture(scope="module", autouse=True)
def sim_cache(tmp_path_factory):
    """One cache of built simulators for the module (simulate, the API and the CLI all honour it)."""
    with pytest.MonkeyPatch.context() as mp:
        d = tmp_path_factory.mktemp("sim_cache")
        mp.setenv("QLOOM_SIM_CACHE", str(d))
        yield d
    _memo.clear()


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """A 64-64-64-64-10 w2a2 MLP with argmax: fifo, mvu, threshold, width converter, argmax stages."""
    model, x = tfc.build(2, 2, n_in=64)
    acc = qloom.compile(model, x, argmax=True, target_ii=16)
    d = tmp_path_factory.mktemp("mlp")
    acc.save(d, x_float=x[:48])
    return d, acc, x


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """One ternary Dense layer (K=16, N=8) and a copy with one ROM bit flipped (a weight 0 -> +1)."""
    rng = np.random.default_rng(0)
    w = rng.integers(-1, 2, (8, 16))
    g = ir.Graph("x", ir.TensorType((16,), ir.Int(4, False)),
                 [ir.Dense("fc", ["x"], "y", weight=w, wtype=ir.Int(2))], "y")
    f = folding_mod.fold(g, target_ii=16)
    pe, simd = f["fc"]["pe"], f["fc"]["simd"]
    x = rng.integers(0, 16, (40, 16))
    good = tmp_path_factory.mktemp("dense")
    emit.write_build_dir(good, g, f, x_int=x)
    # The MVU's weight memory (hdl/mvu.py): address nf*SF + sf holds W[nf*PE + p, sf*SIMD + l] of PE p in
    # lane l at bits [2(p*SIMD+l)+1:2(p*SIMD+l)] (int2); PE 0's lanes are the low bits. Pick a zero weight of
    # PE 0 and set its low bit: 0 -> +1.
    sf_n = 16 // simd
    text = (good / "accelerator.v").read_text()
    rom = {wd["address"]: wd["value"] for wd in faults.rom_words(text)
           if wd["memory"] == "rom" and "mvu" in wd["module"]}
    for addr in range(len(rom)):
        nf, sf = divmod(addr, sf_n)
        lanes = [(rom[addr] >> (2 * k)) & 3 for k in range(simd)]
        want = [int(v) & 3 for v in w[nf * pe, sf * simd:(sf + 1) * simd]]
        assert lanes == want, f"ROM layout assumption broken at rom[{addr}]: {lanes} != {want}"
    addr, lane = next((a, k) for a in range(len(rom)) for k in range(simd)
                      if w[(a // sf_n) * pe, (a % sf_n) * simd + k] == 0)
    bad = tmp_path_factory.mktemp("dense") / "fault"
    info = faults.plant_fault(good, bad, module="mvu", memory="rom", address=addr, bit=2 * lane)
    n, k = (addr // sf_n) * pe, (addr % sf_n) * simd + lane
    w2 = w.copy()
    w2[n, k] = 1
    g2 = ir.Graph("x", g.input_type, [ir.Dense("fc", ["x"], "y", weight=w2, wtype=ir.Int(2))], "y")
    want_faulty = reference.run(g2, x)
    return good, bad, info, reference.run(g, x), want_faulty


def _check_ok(r, build_dir):
    want = np.load(pathlib.Path(build_dir) / "outputs.npy")
    assert r["bit_exact"], r["verdict"]
    assert r["mismatches"] == 0 and r["extra_beats"] == 0 and not r["timed_out"]
    assert r["received_beats"] == r["expected_beats"]
    assert np.array_equal(r["outputs"], want[:r["frames"]])
    for k in ("frames", "ii_measured", "ii_estimated", "latency_cycles", "cycles", "sim_seconds", "simulator"):
        assert r[k] is not None, k
    assert r["cycles"] > 0 and r["sim_seconds"] > 0


# ---------------------------------------------------------------- bit-exact, both drivers, both simulators

@needs_verilator
@pytest.mark.parametrize("driver", DRIVERS)
def test_verilator_bit_exact_with_stalls(mlp, driver):
    d, _, _ = mlp
    r = sim(d, simulator="verilator", driver=driver, stall_prob=0.3, seed=1)
    _check_ok(r, d)
    assert r["simulator"] == "verilator" and r["driver"] == driver
    # stalls never make it faster than the folding allows
    assert r["ii_measured"] >= r["ii_estimated"] - 1


@needs_icarus
@needs_verilator
@pytest.mark.parametrize("driver", DRIVERS)
def test_icarus_same_verdict_and_cycles(mlp, driver):
    d, _, _ = mlp
    rv = sim(d, simulator="verilator", driver=driver, stall_prob=0.3, seed=1)
    ri = sim(d, simulator="icarus", driver=driver, stall_prob=0.3, seed=1)
    _check_ok(ri, d)
    assert ri["bit_exact"] == rv["bit_exact"]
    assert np.array_equal(ri["outputs"], rv["outputs"])
    # same stimulus (LFSRs / seeded Python RNG) on a deterministic design: cycle-exact agreement
    assert (ri["cycles"], ri["latency_cycles"], ri["ii_measured"]) == \
           (rv["cycles"], rv["latency_cycles"], rv["ii_measured"])


@needs_verilator
def test_harness_matches_per_cycle_driver(mlp):
    d, _, _ = mlp
    rh = sim(d, simulator="verilator", driver="harness", stall_prob=0.3, seed=1)
    rc = sim(d, simulator="verilator", driver="cocotb", stall_prob=0.3, seed=1)
    assert rh["bit_exact"] and rc["bit_exact"]
    assert np.array_equal(rh["outputs"], rc["outputs"])


@needs_verilator
@pytest.mark.parametrize("driver", DRIVERS)
def test_measured_ii_matches_estimate_without_stalls(mlp, driver):
    d, _, _ = mlp
    r = sim(d, simulator="verilator", driver=driver, stall_prob=0.0)
    _check_ok(r, d)
    assert abs(r["ii_measured"] - r["ii_estimated"]) <= 1, r
    assert r["latency_cycles"] > 0


@needs_verilator
def test_harness_cycle_exact_with_amaranth_sim(mlp):
    """The same harness around the Amaranth design in amaranth.sim: same outputs, same cycle stamps."""
    from qloom.hdl.accelerator import DataflowAccelerator
    from qloom.sim import harness
    assert run.HARNESS_TOP == harness.HARNESS_TOP
    d, acc, _ = mlp
    n = 12
    r = sim(d, simulator="verilator", driver="harness", stall_prob=0.3, seed=5, frames=n)
    man = json.loads((d / "manifest.json").read_text())
    x = np.load(d / "inputs.npy")[:n]
    beats = streams.to_beats(acc.graph.input_type.dtype, x.reshape(-1), man["ports"]["input"]["elements_per_beat"])
    a = harness.run_amaranth(DataflowAccelerator(acc.graph, man["folding"]), man["ports"], beats, n,
                             stall_prob=0.3, seed=5, drain=2 * man["ii_estimate"] + 64)
    assert a["done"]
    po = man["ports"]["output"]
    out_type = ir.Int(po["element"]["bits"], po["element"]["signed"])
    got = np.array(streams.from_beats(out_type, a["out"], po["elements_per_beat"])).reshape(r["outputs"].shape)
    assert np.array_equal(got, r["outputs"])
    assert a["cycles"] == r["cycles"]
    assert a["out_stamp"][0] - a["in_stamp"][0] == r["latency_cycles"]


# ---------------------------------------------------------------- a planted fault is caught and located

def _check_fault(r, dense):
    good, bad, info, want, want_faulty = dense
    diff = np.argwhere(want != want_faulty)
    assert len(diff) > 0, "the planted fault must change at least one output"
    assert not r["bit_exact"]
    assert r["mismatches"] == len(diff)
    first = r["first_mismatches"][0]
    f, e = diff[0]
    assert (first["frame"], first["element"]) == (f, e)
    assert first["expected"] == want[f, e] and first["got"] == want_faulty[f, e]
    assert np.array_equal(r["outputs"], want_faulty)
    assert f"frame {f}, element {e}" in r["verdict"] and "waveform" in r["verdict"]


@needs_verilator
@pytest.mark.parametrize("driver", DRIVERS)
def test_planted_fault_caught_verilator(dense, driver):
    good, bad, info, _, _ = dense
    assert info["old"] != info["new"]
    assert sim(good, simulator="verilator", driver=driver)["bit_exact"]
    _check_fault(sim(bad, simulator="verilator", driver=driver), dense)


@needs_icarus
@pytest.mark.parametrize("driver", DRIVERS)
def test_planted_fault_caught_icarus(dense, driver):
    _check_fault(sim(dense[1], simulator="icarus", driver=driver), dense)


@needs_icarus
def test_mismatch_names_waveform_file(dense):
    r = sim(dense[1], simulator="icarus", driver="harness", waves=True, frames=4)
    assert not r["bit_exact"]
    assert r["waves"] and pathlib.Path(r["waves"]).stat().st_size > 0
    assert f"waveform: {r['waves']}" in r["verdict"]


# ---------------------------------------------------------------- API and CLI

@needs_verilator
def test_accelerator_simulate_api(mlp):
    d, acc, x = mlp
    xi = acc.quantize_input(x[100:116])
    r = acc.simulate(xi, simulator="verilator", stall_prob=0.2)
    assert r["bit_exact"], r["verdict"]
    assert r["build_reused"], "the same hardware should reuse the cached simulator"
    assert np.array_equal(r["outputs"], acc.reference(xi))
    assert r["build_dir"] is None


@needs_verilator
def test_cli_sim_json(mlp, capsys):
    d, _, _ = mlp
    assert cli(["sim", str(d), "--json", "--frames", "8"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["bit_exact"] and r["frames"] == 8 and r["simulator"] == "verilator"


@needs_icarus
def test_cli_sim_mismatch_exits_nonzero(dense, capsys):
    rc = cli(["sim", str(dense[1]), "--simulator", "icarus"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 1
    assert err.startswith("qloom sim: NOT bit-exact:") and "frame" in err and "element" in err


def test_cli_sim_missing_build_dir(tmp_path, capsys):
    assert cli(["sim", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1


def test_cli_sim_incomplete_build_dir(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text("{}")
    assert cli(["sim", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "incomplete" in err and "accelerator.v" in err and "outputs.npy" in err


def test_cli_sim_simulator_missing(dense, monkeypatch, capsys):
    real = service.shutil.which
    monkeypatch.setattr(service.shutil, "which", lambda name, *a, **k: None if name in ("iverilog", "vvp") else
                        real(name, *a, **k))
    assert cli(["sim", str(dense[0]), "--simulator", "icarus"]) == 2
    assert "iverilog not found" in capsys.readouterr().err
    monkeypatch.setattr(service, "verilator_bin", lambda: None)
    assert cli(["sim", str(dense[0]), "--simulator", "verilator"]) == 2
    assert "verilator is not installed" in capsys.readouterr().err


# ---------------------------------------------------------------- the testbench's model (no simulator)

def test_tb_model_packing_matches_hdl_streams():
    sys.path.insert(0, str(run.TB_DIR))
    try:
        from qloom_tb_model import Port
    finally:
        sys.path.remove(str(run.TB_DIR))
    rng = np.random.default_rng(3)
    for dtype, n in [(ir.Int(4, False), 8), (ir.Int(5, True), 3), (ir.Bipolar, 64), (ir.Int(8, True), 40),
                     (ir.Int(2, True), 1)]:
        p = Port.for_stream("o", dtype, n, (n * 3,))
        vals = rng.integers(dtype.min, dtype.max + 1, (2, n * 3))
        if isinstance(dtype, ir.BipolarType):
            vals = np.where(vals > 0, 1, -1)
        words = p.pack(vals)
        assert words == streams.to_beats(dtype, vals.reshape(-1), n)
        # and both equal a plain element-by-element packing (element 0 in the LSBs; bipolar +1 -> 1)
        flat = vals.reshape(-1, n)
        naive = [sum(((1 if v > 0 else 0) if dtype is ir.Bipolar else int(v) & ((1 << dtype.bits) - 1))
                     << (i * dtype.bits) for i, v in enumerate(beat)) for beat in flat]
        assert words == naive
        assert np.array_equal(p.unpack(words).reshape(vals.shape), vals)


# ---------------------------------------------------------------- heavier cases: make test-slow

@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
@pytest.mark.parametrize("driver", DRIVERS)
def test_tfc_w2a2_bit_exact(tmp_path_factory, simulator, driver):
    if not available(simulator)[0]:
        pytest.skip(available(simulator)[1])
    d = tmp_path_factory.getbasetemp() / "tfc_w2a2"
    if not (d / "manifest.json").exists():
        model, x = tfc.build(2, 2)
        qloom.compile(model, x, target_ii=256).save(d, x_float=x[:32])
    r = sim(d, simulator=simulator, driver=driver, stall_prob=0.3)
    _check_ok(r, d)
    r0 = sim(d, simulator=simulator, driver=driver, stall_prob=0.0, frames=8)
    assert abs(r0["ii_measured"] - r0["ii_estimated"]) <= 1


@pytest.mark.slow
@needs_verilator
def test_verilator_waves(dense):
    r = sim(dense[1], simulator="verilator", driver="harness", waves=True, frames=4)
    assert r["waves"] and pathlib.Path(r["waves"]).stat().st_size > 0 and not r["bit_exact"]


@pytest.mark.slow
@needs_verilator
def test_many_frames_harness_vs_per_cycle(dense):
    rh = sim(dense[0], simulator="verilator", driver="harness", frames=3000, seed=9)
    rc = sim(dense[0], simulator="verilator", driver="cocotb", frames=3000, seed=9)
    assert rh["bit_exact"] and rc["bit_exact"]
    assert np.array_equal(rh["outputs"], rc["outputs"])


@pytest.mark.slow
@needs_icarus
def test_threshold_fault_caught(mlp, tmp_path):
    """A flipped bit in a threshold ROM: both drivers see the same (nonzero) mismatches."""
    d, _, _ = mlp
    bad = tmp_path / "fault"
    faults.plant_fault(d, bad, module="threshold", memory="rom0", address=0, bit=0)
    rh = sim(bad, simulator="icarus", driver="harness")
    rc = sim(bad, simulator="icarus", driver="cocotb")
    assert rh["mismatches"] == rc["mismatches"] > 0
    assert np.array_equal(rh["outputs"], rc["outputs"])
