"""One point of a sweep, evaluated inside a worker process (local pool or Ray).

`run_point(task, data)` rebuilds the model from its spec (memoised per process),
quantizes and fine-tunes it when the point asks, compiles, folds, estimates and,
as the sweep asks, measures accuracy, simulates N frames bit for bit and
synthesises. It never raises for a point's own failure: failures are data,
{"status": "failed" | "does_not_fit", "reason": ...}.
"""
from __future__ import annotations

import os
import pathlib
import socket
import tempfile
import time

from .explore_space import canonical, resolve_target

# per-process memo: a worker builds each model, quantized variant and accuracy once
_MEMO: dict = {}


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _prepare_torch():
    """Single-threaded torch in every worker: the same weights whichever backend or worker count
    (thread counts change float reduction order in training); parallelism comes from points."""
    if not _MEMO.get("torch"):
        import torch
        torch.set_num_threads(1)
        _MEMO["torch"] = True


def _spec_file(source) -> pathlib.Path:
    """The shipped bytes of a file spec, written once per machine under a path named by their hash."""
    name = pathlib.Path(source.spec.split(":")[0] if source.kind == "file" else source.spec).name
    path = pathlib.Path(tempfile.gettempdir()) / "qloom-explore-specs" / source.digest[:20] / name
    if not path.is_file() or path.read_bytes() != source.blob:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
        tmp.write_bytes(source.blob)
        os.replace(tmp, path)
    return path


def build_model(source):
    """(model, example_input, float_model or None) for a ModelSource, memoised."""
    key = ("model", source.digest)
    if key not in _MEMO:
        from qloom.cli import CLIError, load_spec
        from qloom.compiler.errors import BadInput
        if source.kind == "builtin":
            from qloom.examples import build
            model, x = build(source.spec)
            res = (model, x, None)
        elif source.kind == "onnx":
            res = (_spec_file(source), None, None)
        else:
            try:
                got = load_spec(f"{_spec_file(source)}:{source.func}", allow_float=True)
            except CLIError as e:
                raise BadInput(str(e).replace(str(_spec_file(source)), source.spec.split(":")[0])) from None
            res = (got[0], got[1], got[2] if len(got) == 3 else None)
        _MEMO[key] = res
    return _MEMO[key]


def _quantized(source, bits, finetune, train):
    """The model of a point: the spec's own, or its float model through quantize (+ finetune)."""
    model, x, float_model = build_model(source)
    if not bits:
        return model, x
    from qloom.compiler.errors import BadInput
    if float_model is None:
        raise BadInput(f"model '{source.spec}': the space has 'bits' but the spec returns no float model "
                       f"(its function must return (model, example_input, float_model))")
    key = ("quant", source.digest, canonical(bits), finetune)
    if key not in _MEMO:
        import qloom
        qm = qloom.quantize(float_model, x, **bits)
        if finetune:
            if train is None:
                raise BadInput("finetune needs labelled data (data=(x, y) or {'train': (x, y), ...})")
            qm = qloom.finetune(qm, train, epochs=finetune, seed=0)
        _MEMO[key] = qm
    return _MEMO[key], x


def _compiled(source, point, options, train):
    """The point's Accelerator. argmax None (auto): end it with an argmax where the model allows one."""
    key = ("acc", source.digest, canonical(point["bits"]), point["finetune"], options["argmax"])
    if key not in _MEMO:
        import qloom
        from qloom.compiler.errors import QuantError
        model, x = _quantized(source, point["bits"], point["finetune"], train)
        stem = pathlib.PurePath(source.spec.split(":")[-1] if source.kind == "file" else source.spec).stem
        name = "".join(c if c.isalnum() else "_" for c in stem)
        want = options["argmax"]
        try:
            acc = qloom.compile(model, x, name=name, argmax=want is not False)
        except QuantError as e:
            if want is not None or not str(e).startswith("argmax=True:"):
                raise
            acc = qloom.compile(model, x, name=name, argmax=False)
        _MEMO[key] = acc
    return _MEMO[key]


def _board_fold(acc, board, ii, manual) -> dict:
    """Fold for target II `ii` the way boards.fastest_fit folds (board-aware: boards.fit.board_folding,
    where this qloom has it), so "fit*4" is the same kind of folding as "fit"; with manual entries, or
    without board_folding, Accelerator.fold."""
    from qloom.boards import fit
    board_folding = getattr(fit, "board_folding", None)
    if manual or board_folding is None:
        return acc.fold(ii, manual)
    return acc.fold(folding=board_folding(acc.graph, board, ii))


def _fold(acc, point) -> tuple:
    """(folding, resolved target II) for the point ("fit" entries need the board's fastest fit)."""
    from qloom import boards
    target, board = point["target_ii"], point["board"]
    fit_ii = None
    if isinstance(target, str):
        r = boards.fastest_fit(acc.graph, board)
        if r is None:
            return None, None
        fit_ii = r[0]
    ii = resolve_target(target, fit_ii)
    return _board_fold(acc, board, ii, point["folding"]), ii


def _accuracy(acc, key, test) -> float:
    import numpy as np
    k = ("accuracy",) + key
    if k not in _MEMO:
        x, y = test
        out = np.asarray(acc.predict(x))
        # with an argmax the hardware gives the label; without, the class is the largest output
        labels = out.reshape(-1) if acc.argmax else out.reshape(len(out), -1).argmax(1)
        _MEMO[k] = float((labels == np.asarray(y).reshape(-1)).mean())
    return _MEMO[k]


def _estimate_fields(acc, folding, board) -> dict:
    from qloom import boards
    est = boards.estimate_for(acc.graph, folding, board)
    over = boards.fits(est, board)
    clock = boards.BOARDS[board]["clock_mhz"]
    return {"ii": int(est["ii"]), "latency": int(est["latency"]), "est_luts": est["luts"], "est_ffs": est["ffs"],
            "est_brams": est["brams"], "est_dsps": est["dsps"], "est_fits": not over,
            "fps_est": clock * 1e6 / est["ii"],
            "est_overflow": {k: list(v) for k, v in over.items()}}


def _simulate(acc, frames: int, x) -> dict:
    import numpy as np
    xs = np.asarray(x)[:frames]
    r = acc.simulate(x_float=xs, frames=frames)
    out = {"sim_bit_exact": bool(r.bit_exact), "sim_ii": r.ii_measured}
    if not r.bit_exact:
        out["reason"] = f"NOT bit-exact in simulation: {r.mismatches} mismatching elements over {r.frames} frames"
    return out


def _synthesize(acc, point, options, work_dir) -> dict:
    r = acc.synthesize(point["board"], out_dir=work_dir, seed=point["seed"], timeout=options["timeout"] or 1800)
    return {"luts": r["luts"], "ffs": r["ffs"], "brams": r["brams"], "dsps": r["dsps"],
            "fmax_mhz": round(float(r["fmax_mhz"]), 3) if r["fmax_mhz"] else None,
            "fps": r["frames_per_second"], "synth_dir": r.get("out_dir"),
            "synth_notes": r.get("notes") or []}


def _evaluate(task, data, res, secs):
    """Fill `res` step by step (what is done stays recorded when a later step fails)."""
    source, point, options = task["source"], task["point"], task["options"]
    test, train = (data or {}).get("test"), (data or {}).get("train")
    t = time.perf_counter()
    try:
        build_model(source)
    except Exception as e:  # a user's spec: whatever it raises is the point's failure
        raise _SpecFailed(f"building model '{source.spec}' failed: {_first_line(e)}") from e
    acc = _compiled(source, point, options, train)
    secs["build"] = time.perf_counter() - t
    folding, ii = _fold(acc, point)
    if folding is None:
        res.update(status="does_not_fit", reason=f"estimates: even the fully folded design does not fit "
                                                 f"{point['board']}")
        return
    res.update(target_ii_resolved=ii, folding=folding, graph_hash=acc.graph.hash(), argmax=acc.argmax)
    res.update(_estimate_fields(acc, folding, point["board"]))
    if test is not None:
        res["accuracy"] = _accuracy(acc, (source.digest, canonical(point["bits"]), point["finetune"],
                                          options["argmax"]), test)
    if options["sim_frames"]:
        t = time.perf_counter()
        x = test[0] if test is not None else build_model(source)[1]
        if x is None:
            x = acc.frontend.sample_inputs(options["sim_frames"], seed=0)
        res.update(_simulate(acc, options["sim_frames"], x))
        secs["sim"] = time.perf_counter() - t
        if not res["sim_bit_exact"]:
            res["status"] = "failed"
            return
    if options["synth"]:
        from qloom import boards
        t = time.perf_counter()
        try:
            res.update(_synthesize(acc, point, options, task["work_dir"]))
        except boards.DoesNotFit as e:
            over = ", ".join(f"{k} {u}/{a}" for k, (u, a) in e.overflow.items())
            res.update(status="does_not_fit", reason=f"nextpnr: {over or _first_line(e)}")
            return
        finally:
            secs["synth"] = time.perf_counter() - t
    elif not res["est_fits"]:
        over = ", ".join(f"{k} {u}/{a}" for k, (u, a) in res["est_overflow"].items())
        res.update(status="does_not_fit", reason=f"estimates: {over} (over {int(100 * _margin())}% of the device)")
        return
    res["status"] = "ok"


class _SpecFailed(Exception):
    pass


def _margin() -> float:
    from qloom.boards.targets import FIT_MARGIN
    return FIT_MARGIN


def run_point(task: dict, data: dict | None) -> dict:
    """Evaluate one point; returns its result dict (status ok | failed | does_not_fit, reason, metrics)."""
    from qloom.compiler.errors import QloomError
    _prepare_torch()
    _source()
    t0 = time.perf_counter()
    res, secs = {"status": "failed", "reason": None}, {}
    try:
        _evaluate(task, (data or {}).get(task.get("data_key")), res, secs)
    except _SpecFailed as e:
        res.update(status="failed", reason=str(e))
    except QloomError as e:
        res.update(status="failed", reason=_first_line(e))
    except Exception as e:  # noqa: BLE001 - a qloom bug must not stop the sweep: record it
        res.update(status="failed", reason=f"internal error: {_first_line(e)}")
    secs["total"] = time.perf_counter() - t0
    res["timing"] = {k: round(v, 3) for k, v in secs.items()}
    res["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    res["qloom_source"] = _source()
    return res


def _source() -> str:
    """The digest of the qloom sources this worker imported (at its first point)."""
    if "source" not in _MEMO:
        from .explore_cache import source_digest
        _MEMO["source"] = source_digest()
    return _MEMO["source"]
