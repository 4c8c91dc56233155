# amaranth: UnusedElaboratable=no
"""qloom.boards: board tops (elaborated to RTLIL, no tools), the UART link in cocotb (Verilator)
with the host driver `Link` talking through the simulated serial line, folding for a board,
and (slow) real synthesis with the YoWASP tools: a small MLP to an iCEBreaker bitstream,
generic Yosys statistics, and a design that does not fit.
"""
import importlib.util
import io
import json
import pathlib

import numpy as np
import pytest
from amaranth.back import rtlil

import qloom
from qloom import boards
from qloom.boards import sim as board_sim
from qloom.boards.link import Link, LinkError
from qloom.boards.top import SYNC_IN, SYNC_OUT, BoardTop, UARTAccelTop
from qloom.boards.uart import divisor_for
from qloom.cli import main as cli
from qloom.examples import tfc
from qloom.hdl.accelerator import DataflowAccelerator
from qloom.sim import available

VERILATOR, VERILATOR_WHY = available("verilator")
needs_verilator = pytest.mark.skipif(not VERILATOR, reason=f"Verilator not available: {VERILATOR_WHY}")
HAVE_BOARDS = importlib.util.find_spec("amaranth_boards") is not None
needs_boards = pytest.mark.skipif(not HAVE_BOARDS, reason="amaranth-boards not installed (pip install 'qloom[boards]')")


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """A 64-64-64-64-10 w1a1 MLP with argmax, folded for II 64, with a build dir of 16 vectors."""
    model, x = tfc.build(1, 1, n_in=64)
    acc = qloom.compile(model, x, argmax=True, target_ii=64)
    d = tmp_path_factory.mktemp("mlp")
    manifest = acc.save(d, x_float=x[:16])
    return d, acc, manifest


# ---------------------------------------------------------------- elaboration (no tools)

def test_uart_top_elaborates_with_component_and_instance(mlp):
    d, acc, manifest = mlp
    dut = DataflowAccelerator(acc.graph, acc.folding)
    il = rtlil.convert(UARTAccelTop(manifest["ports"], dut=dut, divisor=8, idle_timeout=100), name="t")
    assert "uart_rx" in il and "accel" in il
    il = rtlil.convert(UARTAccelTop(manifest["ports"], top=manifest["top"]), name="t")
    assert f"cell \\{manifest['top']} " in il                      # an Instance of the emitted module
    with pytest.raises(ValueError):
        UARTAccelTop(manifest["ports"])


@needs_boards
@pytest.mark.parametrize("board", ["icebreaker", "ulx3s"])
def test_board_top_elaborates(mlp, board):
    """The board top on the amaranth-boards platform, to RTLIL (prepare runs no tool)."""
    import importlib
    d, acc, manifest = mlp
    modname, cls = boards.BOARDS[board]["platform"]
    platform = getattr(importlib.import_module(modname), cls)()
    top = BoardTop(manifest["ports"], dut=DataflowAccelerator(acc.graph, acc.folding))
    plan = platform.prepare(top, name="top")
    il = plan.files["top.il"]
    assert "uart" in il and "accel" in il
    assert top.divisor == round(platform.default_clk_frequency / 115200)


def test_divisor_for():
    assert divisor_for(12e6, 115200) == 104
    assert divisor_for(25e6, 115200) == 217
    with pytest.raises(ValueError, match="too high"):
        divisor_for(12e6, 6_000_000)
    with pytest.raises(ValueError, match="off"):
        divisor_for(1e6, 230400)


# ---------------------------------------------------------------- host driver (no simulator)

class Loopback(io.RawIOBase):
    """A fake board: answers each input frame with a result computed by a Python function."""

    def __init__(self, link_in, fn, out_port, junk=b""):
        self.inp, self.fn, self.out = link_in, fn, out_port
        self.rx = bytearray()
        self.tx = bytearray(junk)

    def write(self, b):
        self.rx += b
        n = 1 + self.inp.nbytes * self.inp.beats_per_frame
        while len(self.rx) >= n:
            assert self.rx[0] == SYNC_IN
            frame = self.inp.from_bytes(bytes(self.rx[1:n]))
            del self.rx[:n]
            self.tx += bytes([SYNC_OUT]) + self.out.to_bytes(self.fn(frame))
        return len(b)

    def read(self, n):
        k = min(n, len(self.tx))
        data = bytes(self.tx[:k])
        del self.tx[:k]
        return data


def test_link_loopback(mlp):
    d, acc, manifest = mlp
    x = np.load(d / "inputs.npy")
    link = Link(None, d)
    port = Loopback(link.input, lambda f: acc.reference(f[None])[0], link.output, junk=b"\x00\x13")
    link.port = port
    got = link.infer(x)
    assert (got == np.load(d / "outputs.npy")).all()
    assert link.skipped == 2
    assert link.encode(x[0])[0] == SYNC_IN
    assert len(link.encode(x[0])) == 1 + link.input.nbytes * link.input.beats_per_frame
    with pytest.raises(LinkError, match="timed out"):
        link.recv()                                # nothing more to read
    with pytest.raises(ValueError):
        link.encode(x[0][:3])


# ---------------------------------------------------------------- the UART top in cocotb

@needs_verilator
def test_uart_top_cocotb_bit_exact_with_link(mlp, tmp_path):
    """Frames go through the serial line (4 cycles per bit) bit by bit; Link drives it from a thread.
    A partial frame is abandoned first: the idle timeout drops it and raises `error`."""
    d, acc, manifest = mlp
    r = board_sim.simulate_uart(d, frames=6, idle_timeout=400, partial_first=True, cache_dir=tmp_path)
    assert r["ok"], r
    assert r["mismatches"] == 0 and r["frames"] == 6
    frame_bytes = 1 + manifest["ports"]["input"]["beats_per_frame"] * ((manifest["ports"]["input"]["width"] + 7) // 8)
    assert r["bytes_sent"] > 6 * frame_bytes                     # the partial frame went out too
    assert r["bytes_received"] == 6 * (1 + manifest["ports"]["output"]["beats_per_frame"])
    assert r["error"] == 1 and r["overrun"] == 0


# ---------------------------------------------------------------- folding for a board

def test_fastest_fit_and_compile_board(mlp, tmp_path, capsys):
    d, acc, manifest = mlp
    ii, f, est = boards.fastest_fit(acc.graph, "icebreaker")
    assert not boards.fits(est, "icebreaker")
    if ii > 1:                                          # one step faster overflows
        from qloom.hdl import folding as folding_mod
        faster = folding_mod.fold(acc.graph, target_ii=ii - 1)
        assert faster == f or boards.fits(boards.estimate_for(acc.graph, faster, "icebreaker"), "icebreaker")
    big = boards.fastest_fit(acc.graph, "ulx3s")
    assert big[2]["ii"] <= est["ii"]
    out = tmp_path / "b"
    assert cli(["compile", "tfc-w1a1", "--out", str(out), "--argmax", "--board", "icebreaker", "--frames", "4",
                "--json"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert boards.load_graph(out) is not None
    g = boards.load_graph(out)
    assert not boards.fits(boards.estimate_for(g, m["folding"], "icebreaker"), "icebreaker")



@pytest.mark.parametrize("board,cell", [("icebreaker", "ICESTORM_LC"), ("ulx3s", "TRELLIS_COMB")])
@pytest.mark.parametrize("over_by", [1.02, 1.3])
def test_refit_after_a_real_overflow(mlp, board, cell, over_by):
    """After nextpnr finds the fastest estimated fit overflowing the device (used = over_by x capacity),
    the suggestion is the fastest fit whose estimate, scaled by used / estimate, stays within the
    device: never the folding that failed, never faster (the same II in lean mode, or slower).
    Block RAM overflows (estimated exactly) give no refit."""
    d, acc, manifest = mlp
    from qloom.boards import fit
    ii, f, est = boards.fastest_fit(acc.graph, board)
    cap = boards.BOARDS[board]["capacity"]["luts"]
    used = int(over_by * cap) + 1
    margin = fit.refit_margin(est, {cell: (used, cap), "DP16KD": (1, 208)}, board)
    assert margin is not None and margin * used <= est["luts"] and margin < boards.BOARDS[board]["fit_margin"]
    assert fit.refit_margin(est, {"DP16KD": (300, 208), "ICESTORM_RAM": (31, 30)}, board) is None
    r = boards.fastest_fit(acc.graph, board, margin=margin)
    hint = fit.suggest(acc.graph, board, {cell: (used, cap)}, f)
    if r is None:
        assert "not to fit" in hint
        return
    ii2, f2, est2 = r
    assert f2 != f and est2["ii"] >= est["ii"] and est2["luts"] * used / est["luts"] <= cap    # leaner or slower
    assert f"--target-ii {ii2} " in hint and "held to" in hint


def test_seed_sweep_keeps_the_fastest_placement(tmp_path):
    """flow._seed_sweep reruns the place-and-route line with --seed 1, 2, ... into side files, keeps the
    fastest run's report, log and placed design in place (a failed or slower seed changes nothing), and
    notes every seed's Fmax. The place-and-route here is a stand-in script with a known Fmax per seed."""
    import sys
    from qloom.boards import flow
    fake = tmp_path / "pnr.py"
    fake.write_text(
        "import json, sys\n"
        "a = sys.argv[1:]\n"
        "seed = int(a[a.index('--seed') + 1]) if '--seed' in a else 0\n"
        "fmax = {0: 40.0, 1: 38.0, 2: 44.5, 3: None}[seed]\n"
        "if fmax is None:\n"
        "    sys.exit(1)\n"
        "get = lambda k: a[a.index(k) + 1]\n"
        "open(get('--report'), 'w').write(json.dumps({'fmax': {'clk': {'achieved': fmax, 'constraint': 12}}}))\n"
        "open(get('--log'), 'w').write(f'seed {seed}')\n"
        "open(get('--asc'), 'w').write(f'placed {seed}')\n")
    cmd = f"{sys.executable} {fake} --report report.json --log top.tim --json top.json --asc top.asc"
    assert flow._run(cmd, tmp_path, None, 30, "first.log")[0] == 0
    notes = []
    kept = flow._seed_sweep(cmd, tmp_path, None, lambda: 30.0, None, 4, ("report.json", "top.tim", "top.asc"),
                            None, notes)
    assert kept == 2 and flow._report_fmax(tmp_path / "report.json") == 44.5
    assert (tmp_path / "top.asc").read_text() == "placed 2" and (tmp_path / "top.tim").read_text() == "seed 2"
    assert notes == ["nextpnr seeds (Fmax MHz) default: 40.0, 1: 38.0, 2: 44.5, 3: failed; kept seed 2"]
    # the first run the fastest: it stays
    for f in tmp_path.glob("s*.*"):
        f.unlink()
    seeded = cmd.replace("--report", "--seed 2 --report")          # a first run with a seed of its own
    assert flow._run(seeded, tmp_path, None, 30, "first.log")[0] == 0
    notes = []
    assert flow._seed_sweep(seeded, tmp_path, None, lambda: 30.0, 2, 2, ("report.json", "top.tim", "top.asc"),
                            None, notes) is None                     # seed 3 (not 2 twice) fails: the first stays
    assert (tmp_path / "top.asc").read_text() == "placed 2" and "kept the first" in notes[0]
    # a first run that found no placement: the first seed that places is kept, the best of them wins
    for f in tmp_path.glob("*.*"):
        if f.name != "pnr.py":
            f.unlink()
    notes = []
    assert flow._seed_sweep(cmd, tmp_path, None, lambda: 30.0, None, 4, ("report.json", "top.tim", "top.asc"),
                            None, notes, first_ok=False) == 2
    assert flow._report_fmax(tmp_path / "report.json") == 44.5
    assert notes == ["nextpnr seeds (Fmax MHz) default: failed, 1: 38.0, 2: 44.5, 3: failed; kept seed 2"]
    notes = []
    failing = f"{sys.executable} -c 'raise SystemExit(1)' --report report.json --log top.tim --asc top.asc"
    assert flow._seed_sweep(failing, tmp_path, None, lambda: 30.0, None, 3, ("report.json", "top.tim", "top.asc"),
                            None, notes, first_ok=False) is None
    assert "kept none (all failed)" in notes[0]


def test_synthesize_rejects_bad_seeds(mlp):
    """seeds must be a whole number of runs, 1 or more (checked before any tool runs)."""
    d, acc, manifest = mlp
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(boards.SynthError, match="seeds must be"):
            boards.synthesize(d, board="icebreaker", seeds=bad)


def test_baud_defaults_to_what_the_board_top_was_built_with(tmp_path, monkeypatch):
    """`qloom synth` leaves the rate to synthesize() (the board's fastest) unless --baud is given, and
    Link.open's default is the rate a build dir's board top was synthesised with (synth-*/synth.json);
    none, or two that disagree, is an error that says what to pass."""
    from qloom.boards import link as link_mod
    seen = {}

    def fake(dir_, **kw):
        seen.update(kw)
        return {"board": kw["board"], "device": "x", "luts": 1, "ffs": 1, "brams": 0, "dsps": 0, "io": 3,
                "capacity": {"luts": 2, "ffs": 2, "brams": 1, "dsps": 1, "io": 3}, "units": {}, "fmax_mhz": 50.0,
                "clock_mhz": 12.0, "ii": 1, "frames_per_second": 1.0, "notes": [], "bitstream": "b",
                "utilization": {}, "seconds": {}, "out_dir": str(tmp_path)}
    monkeypatch.setattr(boards, "synthesize", fake)
    cli(["synth", str(tmp_path), "--json"])
    assert seen["baud"] is None
    cli(["synth", str(tmp_path), "--baud", "115200", "--json"])
    assert seen["baud"] == 115200
    with pytest.raises(ValueError, match="give baud="):
        link_mod.synthesized_baud(tmp_path)
    (tmp_path / "synth-icebreaker").mkdir()
    (tmp_path / "synth-icebreaker" / "synth.json").write_text(json.dumps({"baud": 3000000}))
    assert link_mod.synthesized_baud(tmp_path) == 3000000
    (tmp_path / "manifest.json").write_text("{}")
    assert link_mod.synthesized_baud(tmp_path / "manifest.json") == 3000000
    (tmp_path / "synth-ulx3s").mkdir()
    (tmp_path / "synth-ulx3s" / "synth.json").write_text(json.dumps({"baud": 1000000}))
    with pytest.raises(ValueError, match="synth-ulx3s: 1000000"):
        link_mod.synthesized_baud(tmp_path)


def test_no_legal_placement_is_a_no_fit():
    """nextpnr's 'no legal placement' with counts within the device is an overflow of the fullest logic
    cell type (so the refit scales the estimates by it); real overflows are reported as they are; a
    failure of another kind is none."""
    from qloom.boards import flow
    util = {"ICESTORM_LC": {"used": 5267, "available": 5280}, "ICESTORM_RAM": {"used": 30, "available": 30},
            "SB_IO": {"used": 4, "available": 96}}
    legal = ["ERROR: Unable to find legal placement for all cells, design is probably at utilisation limit."]
    assert flow.overflow(util, legal) == {"ICESTORM_LC": (5267, 5280)}
    assert flow.overflow(util, ["ERROR: something else"]) == {}
    util["ICESTORM_LC"]["used"] = 5350
    assert flow.overflow(util, legal) == {"ICESTORM_LC": (5350, 5280)}
    est = {"luts": 5180, "ffs": 3744, "brams": 30, "dsps": 0}
    m = boards.fit.refit_margin(est, {"ICESTORM_LC": (5267, 5280)}, "icebreaker")
    assert m is not None and m * 5280 < est["luts"]          # the failed design's estimate is kept out


def test_ecp5_fit_caps_lanes_per_layer(mlp):
    """On ECP5 the fastest fit keeps PE x SIMD of every layer within the board's max_lanes (wider
    layers were not measured to route), and the next faster target breaks the cap or does not fit."""
    d, acc, manifest = mlp
    from qloom.boards import fit
    cap = boards.BOARDS["ulx3s"]["max_lanes"]
    ii, f, est = boards.fastest_fit(acc.graph, "ulx3s")
    assert fit.widest_layer(f) <= cap
    if ii > 1:
        g = fit.board_folding(acc.graph, "ulx3s", ii - 1)
        assert fit.widest_layer(g) > cap or boards.fits(boards.estimate_for(acc.graph, g, "ulx3s"), "ulx3s") or \
            fit.widest_lane_bits(acc.graph, g) > boards.BOARDS["ulx3s"]["max_lane_bits"]
    # a cap of the caller's: never wider, never faster
    ii2, f2, _ = boards.fastest_fit(acc.graph, "ulx3s", max_lanes=16)
    assert fit.widest_layer(f) > 16 and fit.widest_layer(f2) <= 16 and ii2 > ii


def test_ecp5_fit_caps_lane_input_bits(mlp):
    """max_lane_bits caps PE x SIMD x input bits per layer: the board's cap holds, a caller's cap between
    the widest 1-bit and the widest multi-bit layer folds only what it must (never faster), and the
    input bits are the layer's own (a layer of 8-bit inputs counts 8 per lane)."""
    d, acc, manifest = mlp
    from qloom.boards import fit
    types = acc.graph.validate()
    bits = {n.name: types[n.inputs[0]].dtype.bits for n in acc.graph.nodes if n.name in manifest["folding"]}
    ii, f, est = boards.fastest_fit(acc.graph, "ulx3s")
    assert fit.widest_lane_bits(acc.graph, f) <= boards.BOARDS["ulx3s"]["max_lane_bits"]
    assert fit.widest_lane_bits(acc.graph, f) == max(v["pe"] * v["simd"] * bits[k] for k, v in f.items())
    cap = fit.widest_lane_bits(acc.graph, f) // 2
    ii2, f2, _ = boards.fastest_fit(acc.graph, "ulx3s", max_lane_bits=cap)
    assert fit.widest_lane_bits(acc.graph, f2) <= cap and ii2 > ii
    g = fit.board_folding(acc.graph, "ulx3s", ii2 - 1)
    assert fit.widest_lane_bits(acc.graph, g) > cap or boards.fits(boards.estimate_for(acc.graph, g, "ulx3s"), "ulx3s")

def test_ecp5_fit_banks_deep_block_weight_roms():
    """bank_roms: on ECP5 a block-RAM weight memory deeper than one row of DP16KDs gets rom_bank (banks of
    one row, each read registered before the select); a one-row memory, every iCE40 memory and the
    default folding do not."""
    from qloom.boards import fit
    from qloom.compiler import ir
    from qloom.hdl import folding as folding_mod
    rng = np.random.default_rng(2)
    g = ir.Graph("x", ir.TensorType((256,), ir.Bipolar), [
        ir.Dense("d0", ["x"], "y0", weight=rng.choice([-1, 1], size=(128, 256)), wtype=ir.Bipolar),
        ir.Dense("d1", ["y0"], "y1", weight=rng.choice([-1, 1], size=(8, 128)), wtype=ir.Bipolar)], "y1")
    g.validate()
    f = fit.board_folding(g, "ulx3s", 2048, bank_roms=True)
    mem = boards.BOARDS["ulx3s"]["memory"]
    for s in folding_mod.plan(g, f):
        if s.kind != "mvu":
            continue
        w, d = s.unit.structure()["rom_live_bits"], s.unit.rom_depth
        deep = f[s.name]["weights"] == "block" and d > mem.row_depth(w, d)
        assert f[s.name].get("rom_bank") == (mem.row_depth(w, d) if deep else None)
        assert s.unit.rom_banks == (-(-d // mem.row_depth(w, d)) if deep else 1)
    assert f["d0"].get("rom_bank")                  # 16 x 2048 bits: two rows of 1024 x 18
    assert not any("rom_bank" in v for v in fit.board_folding(g, "icebreaker", 2048, bank_roms=True).values())
    assert not any("rom_bank" in v for v in fit.board_folding(g, "ulx3s", 2048).values())


def test_synth_errors_without_running_tools(tmp_path):
    with pytest.raises(boards.SynthError, match="not a build dir"):
        boards.synthesize(tmp_path, board="icebreaker")
    with pytest.raises(boards.SynthError, match="unknown board"):
        boards.synthesize(tmp_path, board="de10")
    assert cli(["synth", str(tmp_path / "nope"), "--board", "generic"]) == 2


# ---------------------------------------------------------------- real tools (slow)

def _tools():
    env = boards.flow.tool_env()
    return not env["_QLOOM_MISSING"]


needs_tools = pytest.mark.skipif(not (_tools() and HAVE_BOARDS),
                                 reason="YoWASP tools not installed (pip install 'qloom[boards]')")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The same MLP fully folded (fits the UP5K)."""
    model, x = tfc.build(1, 1, n_in=64)
    acc = qloom.compile(model, x, argmax=True)
    d = tmp_path_factory.mktemp("small")
    acc.save(d, x_float=x[:4])
    return d, acc


@pytest.mark.slow
@needs_tools
def test_synth_icebreaker_bitstream(small):
    d, acc = small
    r = boards.synthesize(d, board="icebreaker", timeout=900, seeds=2)
    assert pathlib.Path(r["bitstream"]).stat().st_size > 100_000
    # two placements: the kept one's Fmax is the best of those the note lists, and it is the report's
    [note] = [n for n in r["notes"] if n.startswith("nextpnr seeds")]
    runs = dict(x.split(": ") for x in note.split(") ", 1)[1].split("; ")[0].split(", "))
    assert set(runs) == {"default", "1"} and r["seed"] in (None, 1)
    assert abs(r["fmax_mhz"] - max(float(v) for v in runs.values() if v != "failed")) < 0.05
    for k in ("device", "luts", "ffs", "brams", "dsps", "fmax_mhz", "bitstream"):
        assert r[k] is not None, k
    assert 0 < r["luts"] <= 5280 and r["io"] >= 3
    assert r["fmax_mhz"] > 12
    assert json.loads((pathlib.Path(r["out_dir"]) / "synth.json").read_text())["luts"] == r["luts"]


@pytest.mark.slow
@needs_tools
def test_synth_generic_stats(small, capsys):
    d, acc = small
    assert cli(["synth", str(d), "--board", "generic", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["cells"] > 100 and r["transistors"] > 1000 and r["ffs"] > 0
    assert pathlib.Path(r["netlist"]).exists() and "module qloom_board" in pathlib.Path(r["board_top"]).read_text()


@pytest.mark.slow
@needs_tools
def test_synth_does_not_fit(mlp, capsys):
    """The II-64 MLP overflows the UP5K's LCs: exit 3 (does not fit), the resource, the overflow and a folding."""
    d, acc, manifest = mlp
    assert cli(["synth", str(d), "--board", "icebreaker"]) == 3
    err = capsys.readouterr().err
    assert "does not fit" in err and "ICESTORM_LC" in err and "over)" in err and "--target-ii" in err
    assert "estimates held to" in err        # the suggestion is refitted with this run's overflow


@pytest.mark.slow
@needs_tools
@pytest.mark.parametrize("board", ["icebreaker", "ulx3s"])
@pytest.mark.parametrize("bits", [(1, 1), (2, 2)])
def test_placed_luts_within_20_percent_of_estimate(tmp_path, board, bits):
    """nextpnr's logic (iCE40 logic cells; ECP5 TRELLIS_COMB, which packs carries and LUT-RAM into more
    sites than Yosys' cells: costs.c(mem, "carry_pack"/"lutram_pack")) against the board estimate,
    on untrained MLPs of binary and 2-bit weights (2-bit: many weights 0 in every word of a lane)."""
    model, x = tfc.build(*bits, n_in=64, seed=3)
    acc = qloom.compile(model, x, argmax=True)
    d = tmp_path / "b"
    acc.save(d, x_float=x[:4])
    r = boards.synthesize(d, board=board, out_dir=tmp_path / "s", timeout=1500)
    est = r["estimate_device"]["luts"]
    assert abs(est - r["luts"]) <= 0.2 * r["luts"], f"{board} w{bits[0]}a{bits[1]}: {r['luts']} placed, est {est}"


def test_noabc_scripts():
    """The ABC fallback per family: synth_ice40 -noabc; synth_ecp5 (synth_lattice, no -noabc) split around
    its abc9 step with the classic abc in between."""
    ys = "read_rtlil top.il\n    synth_ecp5  -top top\nwrite_json top.json\n"
    out = boards.flow._add_noabc(ys, "synth_ecp5")
    assert "-noabc" not in out
    order = [out.index(s) for s in ("-run :map_luts", "abc -lut 4", "-run map_cells:", "write_json")]
    assert order == sorted(order)
    out = boards.flow._add_noabc("synth_ice40 -dsp -top top\n", "synth_ice40")
    assert out.startswith("synth_ice40 -noabc -dsp") and "noabc_gates.v" in out
    with pytest.raises(boards.SynthError):
        boards.flow._add_noabc("read_rtlil top.il\n", "synth_ice40")


@pytest.mark.slow
@needs_tools
@pytest.mark.parametrize("board,marker", [("icebreaker", "-noabc"), ("ulx3s", "abc -lut 4")])
def test_synth_retries_without_abc(small, tmp_path, monkeypatch, board, marker):
    """YoWASP's Yosys can exit 1 inside ABC (abc9): the flow reruns Yosys with another LUT mapping and
    says so. A wrapper Yosys that fails unless the script has the fallback stands in for the crash."""
    d, acc = small
    real = boards.flow.tool_env()["YOSYS"]
    fake = tmp_path / "bin" / "fake-yosys"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\ngrep -q -- "{marker}" top.ys || {{ echo "ERROR: ABC: execution of command failed"; '
                    f'exit 1; }}\nexec "{real}" "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setitem(boards.targets.TOOLS, "YOSYS", str(fake))
    r = boards.synthesize(d, board=board, out_dir=tmp_path / "s", timeout=1200)
    assert any("retried with" in n for n in r["notes"]), r["notes"]
    assert marker in (tmp_path / "s" / "top.ys").read_text()
    assert pathlib.Path(r["bitstream"]).exists() and r["luts"] > 0


# ---------------------------------------------------------------- test-pattern mode (amaranth.sim, no tools)

def _uart_sim(top, send: bytes, n_recv: int, divisor: int, max_cycles: int, flags: dict | None = None,
              quiet: int = 0):
    """Bit-bang `send` into top.rx, collect n_recv bytes from top.tx (8N1, `divisor` cycles a bit), then
    any more that start within `quiet` cycles; `flags` (a dict) gets top.overrun and top.error at the end."""
    from amaranth.sim import Simulator
    sim = Simulator(top)
    sim.add_clock(1e-8)
    got = []

    async def host(ctx):
        ctx.set(top.rx, 1)
        for _ in range(3 * divisor):
            await ctx.tick()
        for byte in send:
            for bit in [0] + [(byte >> k) & 1 for k in range(8)] + [1]:
                ctx.set(top.rx, bit)
                for _ in range(divisor):
                    await ctx.tick()

    async def listen(ctx):
        cycles, idle = 0, 0
        while len(got) < n_recv or idle < quiet:
            *_, tx = await ctx.tick().sample(top.tx)
            cycles += 1
            assert cycles < max_cycles, f"only {len(got)} of {n_recv} bytes after {max_cycles} cycles"
            if tx:
                idle += len(got) >= n_recv
                continue
            idle = 0
            for _ in range(divisor // 2 + divisor - 1):          # to the middle of data bit 0
                await ctx.tick()
            byte = 0
            for k in range(8):
                byte |= ctx.get(top.tx) << k
                for _ in range(divisor):
                    await ctx.tick()
            got.append(byte)
            cycles += 10 * divisor
        if flags is not None:
            flags.update(overrun=ctx.get(top.overrun), error=ctx.get(top.error))

    sim.add_testbench(host)
    sim.add_testbench(listen)
    sim.run()
    return bytes(got)


def _pattern_top(fold):
    """A small binarized-input MLP behind the UART top: (top, accelerator, pipeline, Link for its ports)."""
    from qloom.boards.link import Link
    from qloom.compiler import builddir
    model, x = tfc.build(1, 1, n_in=16, hidden=(8,), n_out=4, binary_input=True)
    acc = qloom.compile(model, x)
    f = acc.fold(folding=[{"1": {"pe": 2, "simd": 4, "banks": 1}, "4": {"pe": 2, "simd": 2}},      # 4 beats in, 2 out
                          {"1": {"pe": 8, "simd": 16}, "4": {"pe": 4, "simd": 8}}][fold])         # 1 beat in, 1 out
    dut = DataflowAccelerator(acc.graph, f)
    types = acc.graph.validate()
    ports = {"input": builddir.Port.for_stream("i", dut.in_type, dut.in_n, acc.graph.input_type.shape).to_dict(),
             "output": builddir.Port.for_stream("o", dut.out_type, dut.out_n, types[acc.graph.output].shape).to_dict()}
    import types as pytypes
    link = Link(None, pytypes.SimpleNamespace(input=builddir.Port.from_dict(ports["input"]),
                                              output=builddir.Port.from_dict(ports["output"])))
    return UARTAccelTop(ports, dut=dut, divisor=4), acc, dut.pipeline, link


def _check_report(report, frames, acc, pipe, link):
    assert report[0] == 0x5B
    cycles, got = int.from_bytes(report[1:5], "little"), int.from_bytes(report[5:9], "little")
    want = link.expected_checksum(acc.reference(link.pattern_frames(frames))) if frames else 0
    assert got == want
    assert cycles == (0 if frames == 0 else pipe.latency + (frames - 1) * pipe.ii + 1)   # +1: the top's FIFO


@pytest.mark.parametrize("frames,fold", [(0, 0), (1, 0), (5, 0), (5, 1)])
def test_test_pattern_mode_measures_and_checks(frames, fold):
    """0xB5 + N: N frames from the on-chip LFSR through the accelerator, the report (0x5B, cycles,
    checksum) matches the reference model on the same inputs, and the cycles are the pipeline's:
    latency + (N - 1) * II (+1, the top's output FIFO) for a design whose first layer takes a burst."""
    top, acc, pipe, link = _pattern_top(fold)
    report = _uart_sim(top, bytes([0xB5]) + frames.to_bytes(4, "little"), 9, 4, 20000)
    _check_report(report, frames, acc, pipe, link)


def test_test_pattern_ignores_the_line_while_it_runs():
    """While a test runs, a frame on the line is dropped (its beats set `overrun`: the input register
    is the test's LFSR) and a second test command is ignored: one report, the test's own figures,
    and the board still answers a frame afterwards."""
    top, acc, pipe, link = _pattern_top(0)
    frames = 300
    frame = 2 * (np.arange(16) % 3 == 0) - 1                  # bipolar codes
    send = (bytes([0xB5]) + frames.to_bytes(4, "little") + link.encode(frame)
            + bytes([0xB5]) + (7).to_bytes(4, "little"))
    flags = {}
    report = _uart_sim(top, send, 9, 4, 40000, flags, quiet=2000)
    assert len(report) == 9
    _check_report(report, frames, acc, pipe, link)
    assert flags["overrun"] == 1 and flags["error"] == 0
    top, acc, pipe, link = _pattern_top(0)
    send = bytes([0xB5]) + (3).to_bytes(4, "little") + bytes(40) + link.encode(frame)
    got = _uart_sim(top, send, 9 + link.result_bytes, 4, 40000, flags)
    _check_report(got[:9], 3, acc, pipe, link)
    assert got[9] == 0x5A
    np.testing.assert_array_equal(link.output.from_bytes(got[10:]).reshape(-1),
                                  acc.reference(frame[None])[0].reshape(-1))
    assert flags["overrun"] == 0


def test_test_pattern_command_during_a_report_waits_for_it():
    """A test command that completes while the previous test's report is being sent starts after it:
    two reports, each with its own test's figures."""
    top, acc, pipe, link = _pattern_top(1)
    send = bytes([0xB5]) + (1).to_bytes(4, "little") + bytes(3) + bytes([0xB5]) + (4).to_bytes(4, "little")
    got = _uart_sim(top, send, 18, 4, 40000, quiet=2000)
    assert len(got) == 18
    _check_report(got[:9], 1, acc, pipe, link)
    _check_report(got[9:], 4, acc, pipe, link)
    # a frame that arrives while that second test waits is dropped (overrun): the input register is
    # the LFSR again at the start; the next frame's result is the only one, and right
    frame_a, frame_b = 2 * (np.arange(16) % 2) - 1, 2 * (np.arange(16) % 3 == 0) - 1
    assert pipe.latency + 8 < 40                          # test 1 is over when the second 0xB5 has arrived
    send = (bytes([0xB5]) + (1).to_bytes(4, "little") + bytes([0xB5]) + (4).to_bytes(4, "little")
            + link.encode(frame_a) + bytes(30) + link.encode(frame_b))
    flags = {}
    got = _uart_sim(top, send, 18 + link.result_bytes, 4, 60000, flags, quiet=2000)
    assert len(got) == 18 + link.result_bytes and flags["overrun"] == 1
    _check_report(got[:9], 1, acc, pipe, link)
    _check_report(got[9:18], 4, acc, pipe, link)
    assert got[18] == 0x5A
    np.testing.assert_array_equal(link.output.from_bytes(got[19:]).reshape(-1),
                                  acc.reference(frame_b[None])[0].reshape(-1))


def test_netlist_stage_from_verilog_source(tmp_path):
    """boards/netlist.by_stage: a register named after a port it drives (here the board top's) is
    counted with the stage whose Verilog module holds its `src` line, the LUT feeding it too; cells
    without such a source keep their name's stage; without the Verilog, names alone decide."""
    from qloom.boards import netlist
    (tmp_path / "accelerator.v").write_text(
        "module qloom_top(clk);\nendmodule\n\n"
        "module \\qloom_top.s1_width_4_width (clk);\n  reg a;\n  reg b;\nendmodule\n"
        "module \\qloom_top.s2_mvu_4 (clk);\nendmodule\nmodule \\qloom_top.s2_mvu_4.ibuf (clk);\n  reg c;\nendmodule\n")
    cells = {
        "link.o__payload_TRELLIS_FF_Q": {"type": "TRELLIS_FF", "attributes": {"src": "accelerator.v:5.3-5.9|x.v:1"},
                                         "connections": {"DI": [7], "Q": [8]}},
        "link.o__payload_TRELLIS_FF_Q_DI_LUT4_Z": {"type": "LUT4", "attributes": {"src": "cells_map.v:3"},
                                                   "connections": {"A": [8], "Z": [7]}},
        "link.accel.s2_mvu_4.acc_LUT4_Z": {"type": "LUT4", "attributes": {}, "connections": {"A": [8], "Z": [9]}},
        "link.accel.s2_mvu_4.buf_TRELLIS_FF_Q": {"type": "TRELLIS_FF", "attributes": {"src": "accelerator.v:11"},
                                                 "connections": {"DI": [9], "Q": [10]}},
        "link.uart_TRELLIS_FF_Q": {"type": "TRELLIS_FF", "attributes": {}, "connections": {"DI": [10], "Q": [11]}},
    }
    (tmp_path / "top.json").write_text(json.dumps({"modules": {"top": {"attributes": {"top": 1}, "cells": cells}}}))
    got = netlist.by_stage(tmp_path / "top.json")
    assert got["s1_width_4_width"] == {"luts": 1, "ffs": 1, "lone_ffs": 0, "brams": 0, "dsps": 0, "carry_lcs": 0}
    assert got["s2_mvu_4"]["luts"] == 1 and got["s2_mvu_4"]["ffs"] == 1
    assert got["top"]["ffs"] == 1 and got["top"]["luts"] == 0 and got["top"]["lone_ffs"] == 1
    (tmp_path / "accelerator.v").unlink()
    names_only = netlist.by_stage(tmp_path / "top.json")
    assert "s1_width_4_width" not in names_only and names_only["top"]["ffs"] == 2 and names_only["top"]["luts"] == 1


def test_netlist_logic_follows_its_readers_through_levels(tmp_path):
    """boards/netlist.by_stage: ABC's LUTs (no `src`) two levels before a stage's register, named after the
    next stage's port it drives, are counted with that register's stage, as is a compare's carry chain;
    a LUT read by two stages keeps its own name's stage; a port-named memory read register goes to the stage
    feeding it, the board top's own registers (Amaranth `src`) stay. iCE40 carry cells that share their inputs with
    no LUT4 (a compare) are counted as carry_lcs, those beside their sum LUT are not."""
    from qloom.boards import netlist
    (tmp_path / "accelerator.v").write_text(
        "module qloom_top(clk);\nendmodule\n"
        "module \\qloom_top.s1_threshold_3 (clk);\n  reg a;\nendmodule\n"
        "module \\qloom_top.s2_mvu_4 (clk);\n  reg b;\nendmodule\n"
        "module \\qloom_top.s3_fifo_5_fifo (clk);\nendmodule\n")

    def lut(i1, i2, i3, o):
        return {"type": "SB_LUT4", "attributes": {"src": "cells_map.v:1"},
                "connections": {"I0": [1], "I1": [i1], "I2": [i2], "I3": [i3], "O": [o]}}

    def carry(i0, i1, ci, co, src="accelerator.v:3"):
        return {"type": "SB_CARRY", "attributes": {"src": src}, "connections": {"I0": [i0], "I1": [i1], "CI": [ci],
                                                                                "CO": [co]}}

    def ff(d, q, src, kind="SB_DFF"):
        return {"type": kind, "attributes": {"src": src}, "connections": {"DI" if kind == "TRELLIS_FF" else "D": [d],
                                                                          "Q": [q]}}
    cells = {
        # the threshold's output register, named after the next stage's input port (no stage prefix)
        "link.accel.i__payload$3_SB_DFFESR_Q": ff(20, 21, "accelerator.v:3", "SB_DFFESR"),
        "link.accel.i__payload$3_SB_DFFESR_Q_D_SB_LUT4_O": lut(22, 23, 24, 20),
        "link.accel.i__payload$3_SB_DFFESR_Q_D_SB_LUT4_O_I1_SB_LUT4_O": lut(25, 26, 27, 22),
        # a compare (carry only) feeding the LUT above, and one carry beside its sum LUT
        "link.accel.i__payload$3_x_SB_CARRY_CO": carry(30, 31, 32, 27, src="cells_map.v:2"),
        "link.accel.s2_mvu_4.sum_SB_CARRY": carry(40, 41, 42, 43),
        "link.accel.s2_mvu_4.sum_SB_LUT4": lut(40, 41, 42, 44),
        "link.accel.s2_mvu_4.b_SB_DFF_Q": ff(44, 45, "accelerator.v:6"),
        # read by both stages: stays where its name puts it (the board top)
        "link.shared_SB_LUT4_O": lut(50, 51, 52, 23),
        "link.accel.s2_mvu_4.c_SB_DFF_Q": ff(23, 46, "accelerator.v:6"),
        # a memory's read register from Yosys' techmap, named after the next stage's port, fed by the FIFO's
        # LUT-RAM read mux: the FIFO's; the board top's input register (Amaranth source), fed the same way: the top's
        "link.accel.s3_fifo_5_fifo.storage_DO_LUT4_Z": lut(60, 61, 62, 63),
        "link.accel.i__payload$9_TRELLIS_FF_Q": ff(63, 64, "cells_map.v:56", "TRELLIS_FF"),
        "link.accel.s3_fifo_5_fifo.x_LUT4_Z": lut(70, 71, 72, 73),
        "link.accel.i__payload_TRELLIS_FF_Q": ff(73, 74, "boards/top.py:172", "TRELLIS_FF"),
    }
    (tmp_path / "top.json").write_text(json.dumps({"modules": {"top": {"attributes": {"top": 1}, "cells": cells}}}))
    got = netlist.by_stage(tmp_path / "top.json")
    assert got["s1_threshold_3"]["luts"] == 2 and got["s1_threshold_3"]["carry_lcs"] == 1
    assert got["s2_mvu_4"]["luts"] == 1 and got["s2_mvu_4"]["carry_lcs"] == 0
    assert got["s3_fifo_5_fifo"]["ffs"] == 1 and got["s3_fifo_5_fifo"]["luts"] == 1
    assert got["top"]["luts"] == 2 and got["top"]["ffs"] == 1
