"""`qloom.explore(spec, space, data=None, backend="local", address=None, *, out=..., synth=False, ...)`:
design-space sweeps (folding, bits, board, nextpnr seed) on a process pool or on Ray.

    import qloom
    res = qloom.explore("tfc-w1a1", {"target_ii": ["fit", "fit*4"], "seed": [1, 2]}, out="build/explore",
                        synth=True)
    print(res)                         # the Pareto table; res.best["icebreaker"]["folding"]: fastest that fits

The pieces: explore_space (the space file and its points), explore_cache (point keys and
atomic records), explore_worker (one point in a worker), explore_backends (local pool, Ray),
explore_report (tables, designs over seeds, Pareto fronts, the PNG). Decisions: docs/explore.md.
"""
from __future__ import annotations

import os
import pathlib
import sys
import time
import types
from dataclasses import dataclass, field

from qloom.compiler.errors import BadInput

from . import explore_backends as backends
from . import explore_cache as cache
from . import explore_report as report
from .explore_space import expand, label, load_space


@dataclass
class ExploreResult:
    """What a sweep found. `str(result)` is the summary and the Pareto table."""
    out: pathlib.Path
    rows: list                  # one per point, in point order (results.jsonl / results.csv)
    designs: list               # ok points grouped over seeds (best and median Fmax)
    front_fps: list             # Pareto front frames/s vs LUT
    front_accuracy: list        # Pareto front accuracy vs LUT (empty without data)
    best: dict                  # {board: the design with the most frames/s that fits (and reaches min_accuracy)}
    computed: int               # points run by this call
    cached: int                 # points taken from DIR/points
    wall_seconds: float
    paths: dict = field(default_factory=dict)

    def __str__(self):
        parts = [report.format_summary(self.rows), "", report.format_designs(self.front_fps, self.best)]
        if self.front_accuracy:
            parts += ["", report.format_designs(self.front_accuracy, self.best, title="Pareto front: accuracy vs LUT")]
        if self.best:
            parts.append("")
        for board, b in self.best.items():
            parts.append(f"best for {board} (*): {b['label']}, {b['fps_best']:.0f} frames/s, {b['luts']} LUT; "
                         f"fold file {self.paths.get('best_fold_' + board)}")
        return "\n".join(parts)


class Progress:
    """Points done / running / failed: one line redrawn in place on a TTY, a line every `every` s otherwise."""

    def __init__(self, total: int, cached: int, enabled: bool = True, stream=None, every: float = 10.0):
        self.total, self.cached, self.enabled = total, cached, enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done, self.running, self.failed, self.nofit = cached, set(), 0, 0
        self.t0, self.every, self.last, self.last_text = time.monotonic(), every, 0.0, None

    def text(self) -> str:
        el = int(time.monotonic() - self.t0)
        return (f"[explore] {self.done}/{self.total} done ({self.cached} cached), {len(self.running)} running, "
                f"{self.failed} failed, {self.nofit} do not fit, {el // 60}:{el % 60:02d}")

    def started(self, index):
        self.running.add(index)

    def finished(self, index, status):
        self.running.discard(index)
        self.done += 1
        self.failed += status == "failed"
        self.nofit += status == "does_not_fit"

    def draw(self, force: bool = False):
        """Redraw (TTY, at most 5 times a second) or print a line when the counts changed (at most every
        `every` s unless forced)."""
        if not self.enabled:
            return
        now, text = time.monotonic(), self.text()
        counts = text.rsplit(", ", 1)[0]
        if self.tty:
            if force or now - self.last >= 0.2:
                self.stream.write("\r" + text + "\x1b[K")
                self.stream.flush()
                self.last = now
        elif counts != self.last_text and (force or now - self.last >= self.every):
            self.stream.write(text + "\n")
            self.stream.flush()
            self.last, self.last_text = now, counts

    def close(self):
        self.draw(force=True)
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _arrays(pair, what):
    import numpy as np
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise BadInput(f"data: {what} must be (x, y), got {type(pair).__name__}")
    x, y = (np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for v in pair)
    if len(x) != len(y) or len(x) == 0:
        raise BadInput(f"data: {what} has {len(x)} inputs and {len(y)} labels; give as many of each, at least one")
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y, dtype=np.int64).reshape(-1)


def _one_data(d, what):
    """{"test": (x, y), "train": (x, y)} from (x, y) (both the same) or such a dict."""
    if isinstance(d, dict):
        if not set(d) <= {"test", "train"} or "test" not in d:
            raise BadInput(f"data: {what} must be (x, y) or {{'test': (x, y), 'train': (x, y)}}, got keys "
                           f"{sorted(d)}")
        test = _arrays(d["test"], f"{what}['test']")
        return {"test": test, "train": _arrays(d["train"], f"{what}['train']") if "train" in d else test}
    pair = _arrays(d, what)
    return {"test": pair, "train": pair}


def normalize_data(data, models) -> dict:
    """{model spec: {"test": (x, y), "train": (x, y)} or None}. `data` is None, (x, y), {"test": ...,
    "train": ...} (every model), or {model spec: one of those} (per model; models not named get none)."""
    if data is None:
        return {m: None for m in models}
    if isinstance(data, dict) and data and set(data) <= set(models):
        return {m: _one_data(data[m], f"data['{m}']") if m in data else None for m in models}
    one = _one_data(data, "data")
    return {m: one for m in models}


def _models(spec, space) -> list[str]:
    specs = [spec] if isinstance(spec, str) else list(spec or [])
    if specs and "model" in space:
        raise BadInput("give the models either as the spec argument or as the space's 'model' key, not both")
    specs = specs or space.get("model", [])
    if not specs:
        raise BadInput("no model: give a spec (a built-in name, path/to/file.py:function or .onnx) or a 'model' "
                       "list in the space")
    return specs


def explore(spec, space, data=None, backend: str = "local", address: str | None = None, *,
            out="build/explore", synth: bool = False, sim_frames: int = 0, workers: int | None = None,
            timeout: float | None = None, argmax: bool | None = None, retries: int = 1, retry_failed: bool = True,
            min_accuracy: float | None = None, progress: bool = True, title: str | None = None) -> ExploreResult:
    """Evaluate every point of `space` for `spec` and write the results under `out`.

    spec: a built-in example name, path/to/file.py:function, a .onnx file, or a list of them
        (or None with a 'model' list in the space). Workers rebuild models from the spec.
    space: a dict or a JSON file of lists (docs/explore.md): target_ii, folding, bits, finetune,
        board, seed, model. The points are their cartesian product.
    data: (x, y) (or {"test": (x, y), "train": (x, y)}, or {spec: ...} per model): accuracy of
        each point's integer model (= its hardware) on test, fine-tuning on train.
    backend: "local" (a process pool on this machine) or "ray" (Ray tasks: the instance already
        initialised in this process, the cluster at `address`, or a local one started here).
    argmax: end the accelerators with an argmax (True), never (False), or where the model allows
        one (None: a model whose last layer has a bias or per-channel scales outputs its values).
    synth: synthesise, place and route every point (real LUT/FF/BRAM/DSP, Fmax, frames/s).
    sim_frames: simulate that many frames of each point's Verilog and check them bit for bit.
    workers: processes (local) or concurrent tasks (ray); default: the CPU count.
    timeout: seconds per point (killed past it; recorded as failed). retries: runs again of a
        point whose worker died. retry_failed: rerun points a previous sweep recorded as failed.
    Writes out/points/<key>.json per point (the cache: a rerun skips finished points),
    results.jsonl, results.csv, designs.json, pareto.png, and per board best-BOARD.json and the fold
    file best_fold-BOARD.json (also best_fold.json when the space has one board).
    """
    t0 = time.perf_counter()
    if backend not in backends.BACKENDS:
        raise BadInput(f"backend must be one of {', '.join(backends.BACKENDS)}, got {backend!r}")
    if sim_frames < 0 or (timeout is not None and timeout <= 0) or retries < 0:
        raise BadInput("sim_frames and retries must be >= 0 and timeout > 0")
    space = load_space(space)
    models = _models(spec, space)
    sources = {m: cache.resolve_model(m) for m in models}
    per_model = normalize_data(data, models)
    if any(space.get("finetune", [0])) and any(v is None for v in per_model.values()):
        raise BadInput("space: 'finetune' needs data=(x, y) with labels for every model")
    out = pathlib.Path(out)
    points_dir = out / "points"
    versions = cache.tool_versions()
    options = {"synth": bool(synth), "sim_frames": int(sim_frames), "argmax": None if argmax is None else bool(argmax)}
    digests = {m: cache.data_digest(None if d is None else (*d["test"], *d["train"])) for m, d in per_model.items()}
    worker_data = {digests[m]: d for m, d in per_model.items() if d is not None}

    points = expand(space, models, synth)
    keys = [cache.point_key(sources[p["model"]], p, options, digests[p["model"]], versions) for p in points]
    if len(set(keys)) != len(keys):
        raise BadInput("space: two points are the same (repeated entries across the spec and the space)")
    records = {i: rec for i, k in enumerate(keys) if (rec := cache.read_cached(points_dir, k, retry_failed))}
    tasks = {i: {"key": k, "point": points[i], "source": sources[points[i]["model"]],
                 "data_key": digests[points[i]["model"]], "options": {**options, "timeout": timeout},
                 "work_dir": str((out / "work" / k).resolve())}
             for i, k in enumerate(keys) if i not in records}

    bar = Progress(len(points), len(records), enabled=progress)

    def finished(i, res):
        theirs = res.pop("qloom_source", None)
        if theirs is not None and theirs != versions["qloom_source"]:
            # its result may come from other hardware generators than the key says: never cache it as ok
            res = {**backends.failed("the worker ran other qloom sources than the driver (qloom edited during "
                                     "the sweep, or another qloom on a Ray node): rerun the sweep"),
                   "timing": res.get("timing", {}), "worker": res.get("worker")}
        rec = {"key": keys[i], "label": label(points[i]), "point": points[i],
               "model": sources[points[i]["model"]].identity, "options": options,
               "data": digests[points[i]["model"]], "versions": versions, "result": res}
        cache.write_json_atomic(points_dir / f"{keys[i]}.json", rec)
        records[i] = rec
        bar.finished(i, res["status"])

    nworkers = workers or os.cpu_count() or 1
    try:
        if tasks:
            bar.draw(force=True)
        if tasks and backend == "local":
            backends.run_local(tasks, worker_data, nworkers, timeout, retries, bar.started, finished, bar.draw)
        elif tasks:
            backends.run_ray(tasks, worker_data, workers, timeout, retries, bar.started, finished, bar.draw,
                             address=address)
    finally:
        bar.close()
    rows = [report.make_row(i, keys[i], points[i], records[i]["result"]) for i in range(len(points))]
    return _write_outputs(out, space, rows, options, versions, len(tasks), len(points) - len(tasks),
                          time.perf_counter() - t0, min_accuracy, title, backend)


def _write_outputs(out, space, rows, options, versions, computed, cached_n, wall, min_accuracy, title, backend):
    items = report.designs(rows)
    best = report.best_designs(items, min_accuracy)
    res = ExploreResult(out=out, rows=rows, designs=items, front_fps=report.pareto(items, "fps_best"),
                        front_accuracy=report.pareto(items, "accuracy"), best=best, computed=computed,
                        cached=cached_n, wall_seconds=wall)
    paths = {"results_jsonl": out / "results.jsonl", "results_csv": out / "results.csv",
             "designs": out / "designs.json", "pareto_png": out / "pareto.png"}
    cache.write_text_atomic(paths["results_jsonl"], report.rows_jsonl(rows))
    cache.write_text_atomic(paths["results_csv"], report.rows_csv(rows))
    cache.write_json_atomic(paths["designs"], items)
    cache.write_json_atomic(out / "space.json", space)
    cache.write_json_atomic(out / "sweep.json", {"options": options, "versions": versions, "backend": backend,
                                                 "points": len(rows), "computed": computed, "cached": cached_n,
                                                 "wall_seconds": round(wall, 2)})
    if items:
        report.plot_pareto(items, paths["pareto_png"], best, title=title or f"qloom explore: {out}")
    else:                                   # nothing fits: no plot, and no stale one from an earlier run
        paths.pop("pareto_png").unlink(missing_ok=True)
    for stale in out.glob("best*.json"):
        stale.unlink(missing_ok=True)       # from an earlier run of this dir
    for board, b in best.items():
        paths["best_fold_" + board] = out / f"best_fold-{board}.json"
        cache.write_json_atomic(paths["best_fold_" + board], b["folding"])
        cache.write_json_atomic(out / f"best-{board}.json", b)
    if len(best) == 1:                      # one board: the plain names too
        paths["best_fold"] = out / "best_fold.json"
        cache.write_json_atomic(paths["best_fold"], next(iter(best.values()))["folding"])
    res.paths = {k: str(v) for k, v in paths.items()}
    return res


class _CallableModule(types.ModuleType):
    """`qloom.explore` is this module (the package attribute a submodule import sets) and also the
    function: calling the module calls explore(), so `qloom.explore(...)` works however it was imported."""

    def __call__(self, *args, **kwargs):
        return explore(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
