"""The `qloom` command line (also `python -m qloom`)."""
from __future__ import annotations

import importlib.util
import json
import pathlib
import sys
import time


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


# one word per error class on the message line (docs/errors.md lists the exit codes)
LABELS = {1: "NOT bit-exact", 2: "error", 3: "does not fit", 4: "tool failure", 70: "internal error",
          130: "interrupted"}


def load_spec(spec: str, allow_float: bool = False):
    """(model, example_input) from a built-in example name or `path/to/file.py:function`.

    allow_float: the function may also return (model, example_input, float_model)."""
    from qloom.examples import EXAMPLES, build
    if spec in EXAMPLES:
        return build(spec)
    if ":" in spec:
        path, func = spec.rsplit(":", 1)
        p = pathlib.Path(path)
        if not p.is_file():
            raise CLIError(f"spec '{spec}': file {path} not found")
        mod_spec = importlib.util.spec_from_file_location(p.stem, p)
        mod = importlib.util.module_from_spec(mod_spec)
        # the spec is executed Python (trust it like any script); its directory is on the import path
        # so it can import its sibling modules
        sys.path.insert(0, str(p.resolve().parent))
        try:
            mod_spec.loader.exec_module(mod)
            fn = getattr(mod, func, None)
            if not callable(fn):
                raise CLIError(f"spec '{spec}': {path} has no function '{func}'")
            res = fn()
        except (CLIError, KeyboardInterrupt):
            raise
        except Exception as e:  # a user's file: report what broke, in one line
            raise CLIError(f"spec '{spec}': importing or running {path} failed: {type(e).__name__}: {e}") from e
        finally:
            sys.path.remove(str(p.resolve().parent))
        from qloom import checks
        return checks.spec_result(res, spec, func, allow_float)
    raise CLIError(f"unknown spec '{spec}': give a built-in example ({', '.join(EXAMPLES)}) "
                   f"or path/to/file.py:function returning (model, example_input)")


def _is_onnx(spec: str) -> bool:
    return spec.lower().endswith(".onnx")


def _load_inputs(path):
    """--inputs: a .npy of float inputs (batch first, the model's own layout), or None."""
    if not path:
        return None
    import numpy as np

    from qloom.cli_args import load_array
    x = load_array(path, "--inputs", "a .npy array", CLIError)
    if x.dtype.kind not in "fiub" or x.ndim < 2 or len(x) == 0:
        raise CLIError(f"--inputs: {path} must hold a non-empty numeric batch (batch first), "
                       f"got dtype {x.dtype} shape {x.shape}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise CLIError(f"--inputs: {path} holds NaN or infinite values")
    return x.astype(np.float32)


def _progress(msg):
    print(f"[qloom] {msg}", file=sys.stderr, flush=True)


def cmd_examples(args):
    from qloom.examples import EXAMPLES
    if args.json:
        print(json.dumps({k: v[1] for k, v in EXAMPLES.items()}, indent=2))
    else:
        w = max(map(len, EXAMPLES))
        for k, (_, desc) in EXAMPLES.items():
            print(f"{k:<{w}}  {desc}")


def cmd_compile(args):
    import qloom
    from qloom.compiler import builddir
    builddir.check_out_dir(args.out)          # before any work: a bad --out fails in a second, not minutes
    folding = None
    if args.fold:
        p = pathlib.Path(args.fold)
        if not p.is_file():
            raise CLIError(f"--fold: file {args.fold} not found")
        try:
            folding = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CLIError(f"--fold: {args.fold} is not valid JSON: {e}") from e
        from qloom import checks
        folding = checks.folding_spec(folding)
    t0 = time.time()
    _progress(f"loading {args.spec}")
    if _is_onnx(args.spec):
        model, x = pathlib.Path(args.spec), _load_inputs(args.inputs)
        name = model.stem
    else:
        if args.inputs:
            raise CLIError("--inputs is for ONNX models; a spec function returns its own example input")
        model, x = load_spec(args.spec)
        name = args.spec.split("/")[-1].split(":")[-1]
    name = "".join(c if c.isalnum() else "_" for c in name)
    _progress("lowering to the integer IR and checking fidelity")
    import warnings

    from qloom.api import FidelityWarning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FidelityWarning)
        acc = qloom.compile(model, x, name=name, argmax=args.argmax, target_ii=args.target_ii, folding=folding)
    for w in caught:
        if issubclass(w.category, FidelityWarning):
            _progress(f"note: {w.message}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if args.board:
        _fold_for_board(acc, args.board, args.target_ii, folding)
    _progress("folding and generating Verilog")
    if x is None:                      # an ONNX model without --inputs: inputs that cover the input codes
        x = acc.frontend.sample_inputs(args.frames, seed=0)
    frames = min(args.frames, len(x))
    manifest = acc.save(args.out, x_float=x[:frames])
    _progress(f"wrote {args.out} in {time.time() - t0:.1f} s")
    if args.json:
        print(json.dumps({"out": str(args.out), "ii_estimate": manifest["ii_estimate"],
                          "latency_estimate": manifest["latency_estimate"],
                          "resources_estimate": manifest["resources_estimate"],
                          "folding": manifest["folding"], "graph_hash": manifest["graph_hash"]}, indent=2))
    else:
        print(acc.graph.summary())
        r = manifest["resources_estimate"]
        print(f"II {manifest['ii_estimate']} cycles, latency ~{manifest['latency_estimate']} cycles, "
              f"LUT {r['luts']}, FF {r['ffs']}, BRAM18 {r['brams']}, DSP {r['dsps']} (estimates)")
        print(f"build dir: {args.out} (accelerator.v, manifest.json, inputs.npy, outputs.npy)")


def cmd_sim(args):
    """Simulate a build dir's Verilog under cocotb; exit 1 (one line on stderr) unless bit-exact."""
    from qloom import sim
    r = sim.simulate(args.dir, simulator=args.simulator, frames=args.frames, stall_prob=args.stall_prob,
                     waves=args.waves, seed=args.seed, driver=args.driver, progress=_progress).to_dict()
    r.pop("outputs", None)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        def k(v):
            return f"{v / 1e3:.0f}k" if v and v >= 1e4 else f"{v:.0f}" if v else "-"
        lat_mean = f"{r['latency_mean']:.0f}" if r["latency_mean"] is not None else "-"
        print(f"{args.dir}: {r['simulator']}, {r['driver']} driver, {r['frames']} frames, "
              f"stall probability {r['stall_prob']}")
        print(f"  bit-exact   {'yes' if r['bit_exact'] else 'NO'} ({r['mismatches']} mismatching elements)")
        print(f"  II          {r['ii_measured']} cycles measured (median), {r['ii_estimated']} estimated")
        print(f"  latency     {r['latency_cycles']} cycles (frame 0), {lat_mean} mean, "
              f"~{r['latency_estimated']} estimated")
        print(f"  simulated   {r['cycles']} cycles in {r['sim_seconds']:.2f} s: {k(r['cycles_per_second'])} "
              f"cycles/s, {k(r['frames_per_second'])} frames/s")
        print(f"  wall        {r['wall_seconds']:.1f} s (build {'reused' if r['build_reused'] else 'new'})")
        if r["waves"]:
            print(f"  waves       {r['waves']}")
        if not r["bit_exact"]:
            print(r["verdict"])
    if not r["bit_exact"]:
        first = r["first_mismatches"][0] if r["first_mismatches"] else None
        why = (f"{r['mismatches']} mismatching elements, first at frame {first['frame']} element "
               f"{first['element']}: expected {first['expected']}, got {first['got']}" if first else
               "timed out" if r["timed_out"] else r["verdict"].splitlines()[0])
        print(f"qloom sim: NOT bit-exact: {why} (waves: {r['waves'] or 'rerun with --waves'})", file=sys.stderr)
        return 1
    return 0


def cmd_analyze(args):
    """Quantization error analysis of SPEC on its example input (tables, JSON, PNG histograms)."""
    import qloom
    _progress(f"loading {args.spec}")
    res = load_spec(args.spec, allow_float=True)
    model, x = res[0], res[1]
    float_model = res[2] if len(res) == 3 else None
    x = x[:args.frames] if args.frames else x
    acc = qloom.compile(model, x, name=args.spec.replace("-", "_").split("/")[-1].split(":")[-1])
    _progress("analyzing" + (" against the float model" if float_model is not None else
                             " (no float model: the spec may return (model, x, float_model))"))
    rep = acc.analyze(x, float_model=float_model, out_dir=None if args.no_plots else args.out)
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "analysis.json").write_text(rep.to_json(indent=2))
    print(rep.to_json(indent=2) if args.json else rep)


def cmd_demo(args):
    from qloom import demo
    rows = demo.main(out=args.out, simulator=args.simulator, target_ii=args.target_ii, epochs=args.epochs,
                     as_json=args.json)
    bad = [r["name"] for r in rows if not r["bit_exact"] or r["fidelity"] < 1.0]
    if bad:
        print(f"qloom demo: hardware differs from torch eval for {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


def _fold_for_board(acc, board, target_ii, folding):
    """compile --board: the fastest folding the estimates say fits (or a warning for a given one)."""
    from qloom import boards
    if target_ii is not None or folding:
        over = boards.fits(boards.estimate_for(acc.graph, acc.fold(target_ii, folding), board), board)
        if over:
            _progress(f"warning: estimates say this folding overflows {board}: "
                      + ", ".join(f"{k} {u}/{c}" for k, (u, c) in over.items()))
        return
    r = boards.fastest_fit(acc.graph, board)
    if r is None:
        raise CLIError(f"even the fully folded design is estimated not to fit {board}")
    _, f, e = r
    acc.fold(folding=f)
    _progress(f"{board}: fastest folding the estimates say fits: II {e['ii']} cycles "
              f"(est. {e['luts']} LUT, {e['ffs']} FF, {e['brams']} BRAM, {e['dsps']} DSP)")


def cmd_synth(args):
    from qloom import boards
    r = boards.synthesize(args.dir, board=args.board, out_dir=args.out, timeout=args.timeout, baud=args.baud,
                          seed=args.seed, seeds=args.seeds, progress=_progress)
    if args.json:
        print(json.dumps(r, indent=2, default=str))
    else:
        print(boards.format_report(r))
    return 0


def make_parser():
    """qloom's argument parser (qloom/cli_args.py), each subcommand running its cmd_* function here."""
    from qloom import cli_args
    return cli_args.make_parser({"examples": cmd_examples, "compile": cmd_compile, "demo": cmd_demo,
                                 "analyze": cmd_analyze, "sim": cmd_sim, "synth": cmd_synth})


def _on_terminate_interrupt():
    """SIGTERM (kill) ends a run like Ctrl-C does: one line, exit 130, children ended."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:            # not the main thread (an embedding host): leave signals alone
        pass


def _end_children():
    """End the tools this run started (make, g++, Verilator, yowasp) with it. They share our process
    group when qloom was started from a shell (it leads its own group then); under another program
    (pytest, an IDE) we are not the leader, and the runner's subprocess handling ends its child."""
    import os
    import signal
    if os.getpgrp() != os.getpid():
        return
    old = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        os.killpg(os.getpgrp(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, old)


def _first_line(e) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def main(argv=None):
    """Run the CLI; returns the exit status: 0 ok, 1 not bit-exact, 2 bad input, 3 does not fit,
    4 tool failure, 70 internal error, 130 interrupted (docs/errors.md). One line on stderr per error;
    QLOOM_DEBUG=1 shows the traceback."""
    import os

    from qloom.compiler.errors import QloomError
    ap = make_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "fn", None):
        ap.print_help()
        return 0
    debug = bool(os.environ.get("QLOOM_DEBUG"))
    _on_terminate_interrupt()
    try:
        rc = args.fn(args)
    except KeyboardInterrupt:
        _end_children()
        print(f"qloom {args.cmd}: interrupted", file=sys.stderr)
        return 130
    except CLIError as e:
        print(f"qloom {args.cmd}: error: {_first_line(e)}", file=sys.stderr)
        return 2
    except QloomError as e:
        if debug:
            raise
        print(f"qloom {args.cmd}: {LABELS.get(e.exit_code, 'error')}: {_first_line(e)}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # noqa: BLE001 - a qloom bug: one line, its own exit status
        if debug:
            raise
        print(f"qloom {args.cmd}: internal error: {type(e).__name__}: {_first_line(e)} "
              f"(a qloom bug: rerun with QLOOM_DEBUG=1 for the traceback and report it)", file=sys.stderr)
        return 70
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
