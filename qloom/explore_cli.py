"""`qloom explore SPEC... --space space.json --out DIR`: the command line of qloom.explore.

qloom/cli_args.py's make_parser adds it with `explore_cli.add_parser(sub)`; the options it shares with
the other subcommands (--json) come from there.
"""
from __future__ import annotations

import json
import sys

from qloom import cli_args
from qloom.compiler.errors import BadInput, DoesNotFitError, ToolFailure


def load_data(arg: str | None):
    """--data: None, 'digits' (the digits test split; fine-tuning on the train split), or a .npz
    with arrays x and y (optional x_train, y_train)."""
    if not arg:
        return None
    if arg == "digits":
        from qloom.examples import digits
        xtr, ytr, xte, yte = digits.load()
        return {"test": (xte.numpy(), yte.numpy()), "train": (xtr.numpy(), ytr.numpy())}
    z = cli_args.load_array(arg, "--data", "a .npz file", BadInput,
                            hint=" (give a .npz with arrays x and y, or 'digits')")
    if not {"x", "y"} <= set(z.files):
        raise BadInput(f"--data: {arg} must hold arrays x and y (optional x_train, y_train); it has {z.files}")
    test = (z["x"], z["y"])
    if {"x_train", "y_train"} <= set(z.files):
        return {"test": test, "train": (z["x_train"], z["y_train"])}
    return test


def cmd_explore(args):
    from qloom.explore import explore
    res = explore(args.spec or None, args.space, data=load_data(args.data),
                  backend="ray" if args.ray is not None else "local", address=args.ray or None, out=args.out,
                  synth=args.synth, sim_frames=args.sim or 0, workers=args.workers, timeout=args.timeout,
                  argmax=False if args.no_argmax else None, retry_failed=not args.no_retry_failed,
                  min_accuracy=args.min_accuracy, progress=not args.json)
    if args.json:
        print(json.dumps({"rows": res.rows, "front_fps": res.front_fps, "front_accuracy": res.front_accuracy,
                          "best": res.best, "paths": res.paths, "computed": res.computed, "cached": res.cached,
                          "wall_seconds": res.wall_seconds}, indent=1, default=str))
    else:
        print(res)
        print(f"tables: {res.paths['results_csv']}, {res.paths['results_jsonl']}"
              + (f"; plot: {res.paths['pareto_png']}" if "pareto_png" in res.paths else "")
              + f" ({res.computed} points run, {res.cached} cached, {res.wall_seconds:.0f} s)")
    if not res.designs:
        # no point is usable: exit with the class of what went wrong (failures are listed above)
        if all(r["status"] == "does_not_fit" for r in res.rows):
            raise DoesNotFitError(f"no point of the space fits: {res.rows[0]['reason']}")
        first = next(r for r in res.rows if r["status"] == "failed")
        raise ToolFailure(f"no point of the space succeeded; first failure (#{first['index']}): {first['reason']}")
    return 0


def add_parser(subparsers):
    """Add the `explore` subcommand to qloom's subparsers."""
    p = cli_args.add_command(
        subparsers, "explore", cmd_explore,
        help="design-space sweep: folding, bits, board, nextpnr seed; Pareto fronts and the best fold",
        description="Evaluate every point of a design space (the cartesian product of the space file's lists: "
                    "target_ii, folding, bits, finetune, board, seed, model): compile, estimate and, on request, "
                    "synthesise (real LUT/FF/BRAM/DSP, Fmax, frames/s), simulate N frames bit for bit and measure "
                    "accuracy on --data. Points run on a local process pool, or on Ray with --ray. Every point "
                    "is cached in DIR/points by a content hash: a rerun skips finished points. Writes "
                    "results.jsonl, results.csv, pareto.png and best_fold.json (docs/explore.md).")
    p.add_argument("spec", nargs="*", help="built-in example names, path/to/file.py:function (returning "
                                           "(model, x) or (model, x, float_model)) or .onnx files; or none with "
                                           "a 'model' list in the space")
    p.add_argument("--space", required=True, help='JSON file, e.g. {"target_ii": [64, "fit"], "board": '
                                                  '["icebreaker"], "seed": [1, 2, 3]}')
    p.add_argument("--out", required=True, help="sweep directory (points cache, tables, plot, fold file)")
    p.add_argument("--synth", action="store_true", help="synthesise, place and route every point (YoWASP)")
    p.add_argument("--sim", type=int, default=None, metavar="FRAMES",
                   help="simulate FRAMES frames of every point's Verilog and check them bit for bit")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray: alone, a local Ray instance started for the sweep; with ADDRESS "
                        "(host:port or 'auto'), join that cluster (pip install 'qloom[explore]'). Put it after "
                        "SPEC or write --ray=ADDRESS: a word right after --ray is taken as the address")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (local) or concurrent tasks (Ray); default: the CPU count")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per point before it is killed and "
                                                                "recorded as failed (default 1800)")
    p.add_argument("--data", default=None, help="labelled data for accuracy (and fine-tuning): a .npz with "
                                                "x, y (optional x_train, y_train), or 'digits'")
    p.add_argument("--min-accuracy", type=float, default=None,
                   help="the best point must reach this accuracy (0..1) on --data")
    p.add_argument("--no-argmax", action="store_true", help="do not end the accelerators with an argmax (default: "
                                                                   "one wherever the model allows it)")
    p.add_argument("--no-retry-failed", action="store_true",
                   help="keep the failures recorded by an earlier run instead of running them again")
    cli_args.add_json(p, "machine-readable result (no progress line)")
    return p


def main(argv=None):
    """`python -m qloom.explore_cli ARGS` runs `qloom explore ARGS` (the same output and exit codes), for
    use before the subcommand is in qloom's own parser and in tests that run it as a process."""
    import argparse

    from qloom import cli
    from qloom.compiler.errors import QloomError
    ap = argparse.ArgumentParser(prog="qloom")
    add_parser(ap.add_subparsers(dest="cmd"))
    args = ap.parse_args(["explore", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("qloom explore: interrupted", file=sys.stderr)
        return 130
    except QloomError as e:
        print(f"qloom explore: {cli.LABELS.get(e.exit_code, 'error')}: {cli._first_line(e)}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
