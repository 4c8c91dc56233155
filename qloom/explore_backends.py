"""Where the points of a sweep run: a process pool on this machine (`local`) or Ray tasks (`ray`).

Both take the same tasks and report through the same two callbacks, `started(index)` and
`finished(index, result)`; the engine (qloom/explore.py) writes each result as it comes, so
an interrupted sweep loses nothing finished. A point whose worker dies is run again (up to
`retries` times) and then recorded as failed; a point past its timeout is killed and
recorded as failed.
"""
from __future__ import annotations

import collections
import multiprocessing
import multiprocessing.connection
import os
import signal
import time

from qloom.compiler.errors import BadInput

BACKENDS = ("local", "ray")
TICK = 0.5          # seconds between checks for timeouts and progress updates


def failed(reason: str) -> dict:
    return {"status": "failed", "reason": reason, "timing": {}, "worker": None}


# ---------------------------------------------------------------- local: a pool of spawned processes

def _worker_main(conn, data):
    """A local worker: run the points it is sent until it gets None (or its pipe closes)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the parent decides what Ctrl-C stops
    from qloom.explore_worker import run_point
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        index, task = msg
        conn.send((index, run_point(task, data)))


def _children_map() -> dict:
    """{pid: [child pids]} from /proc (Linux); empty where /proc is not there."""
    kids = collections.defaultdict(list)
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids[ppid].append(int(entry))
    return kids


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant (the synthesis tools run in their own sessions,
    so killing the worker's process group would leave them running)."""
    kids, todo, tree = _children_map(), [pid], []
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(kids.get(p, []))
    for p in reversed(tree):
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class _Slot:
    """One worker process and the point it is running."""

    def __init__(self, ctx, data):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, data), daemon=True)
        self.proc.start()
        child.close()
        self.index, self.since, self.models = None, None, set()

    def send(self, index, task):
        self.index, self.since = index, time.monotonic()
        self.models.add(task["source"].digest)
        self.conn.send((index, task))

    def stop(self):
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass

    def kill(self):
        if self.proc.is_alive():
            kill_tree(self.proc.pid)
        self.proc.join(5)
        self.conn.close()


def _pick(pending: collections.deque, tasks, slot, slots):
    """The next point for `slot`: one whose model it has built, else one whose model no other worker
    holds (each worker trains a model once), else the first pending."""
    held = set().union(*(s.models for s in slots if s is not slot))
    order = list(pending)
    for want in (lambda d: d in slot.models, lambda d: d not in held, lambda d: True):
        for i in order:
            if want(tasks[i]["source"].digest):
                pending.remove(i)
                return i
    return None


def run_local(tasks: dict, data, workers: int, timeout, retries, started, finished, tick) -> None:
    """Run `tasks` ({index: task}) on `workers` spawned processes."""
    ctx = multiprocessing.get_context("spawn")
    pending = collections.deque(sorted(tasks))
    attempts = collections.Counter()
    slots = [_Slot(ctx, data) for _ in range(max(1, min(workers, len(tasks))))]
    try:
        while pending or any(s.index is not None for s in slots):
            for s in slots:
                if s.index is None and pending:
                    i = _pick(pending, tasks, s, slots)
                    attempts[i] += 1
                    s.send(i, tasks[i])
                    started(i)
            busy = [s for s in slots if s.index is not None]
            multiprocessing.connection.wait([s.conn for s in busy] + [s.proc.sentinel for s in busy], TICK)
            for k, s in enumerate(slots):
                if s.index is None:
                    continue
                if s.conn.poll():
                    try:
                        index, res = s.conn.recv()
                    except (EOFError, OSError):
                        pass
                    else:
                        s.index = None
                        finished(index, res)
                        continue
                i = s.index
                if not s.proc.is_alive():
                    code = s.proc.exitcode
                    s.kill()
                    slots[k] = _Slot(ctx, data)
                    if attempts[i] <= retries:
                        pending.appendleft(i)
                    else:
                        finished(i, failed(f"worker died (exit code {code}) on {attempts[i]} attempts"))
                elif timeout and time.monotonic() - s.since > timeout:
                    s.kill()
                    slots[k] = _Slot(ctx, data)
                    finished(i, failed(f"timeout: killed after {timeout:g} s"))
            tick()
    finally:
        for s in slots:
            s.stop()
        for s in slots:
            s.proc.join(2)
            s.kill()


# ---------------------------------------------------------------- ray: one task per point

def _import_ray():
    try:
        import ray
    except ImportError:
        raise BadInput("backend 'ray' needs the ray package: pip install 'qloom[explore]'") from None
    return ray


def run_ray(tasks: dict, data, workers, timeout, retries, started, finished, tick, address=None) -> None:
    """Run `tasks` as Ray tasks: on the instance already initialised in this process, on the cluster at
    `address`, or on a local instance started here (and shut down at the end)."""
    ray = _import_ray()
    from qloom.explore_worker import run_point
    own = not ray.is_initialized()
    if own:
        kw = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=workers or os.cpu_count(), **kw)
    try:
        remote = ray.remote(num_cpus=1, max_retries=retries)(run_point)
        data_ref = ray.put(data)
        capacity = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        pending = collections.deque(sorted(tasks))
        inflight = {}                                       # ref -> (index, submitted at)
        while pending or inflight:
            while pending and len(inflight) < capacity:    # at most one point per CPU: submitted = running
                i = pending.popleft()
                inflight[remote.remote(tasks[i], data_ref)] = (i, time.monotonic())
                started(i)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=TICK)
            for ref in ready:
                i, _ = inflight.pop(ref)
                try:
                    res = ray.get(ref)
                except ray.exceptions.RayError as e:        # the worker died on every attempt
                    lines = str(e).strip().splitlines()
                    res = failed(f"ray: {type(e).__name__}: {lines[0] if lines else ''}")
                finished(i, res)
            if timeout:
                now = time.monotonic()
                for ref, (i, t0) in list(inflight.items()):
                    if now - t0 > timeout:
                        ray.cancel(ref, force=True)
                        del inflight[ref]
                        finished(i, failed(f"timeout: cancelled after {timeout:g} s"))
            tick()
    finally:
        if own:
            ray.shutdown()
