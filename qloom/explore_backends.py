"""Where the points of a sweep run: a pool of worker processes on this machine (`local`) or Ray tasks (`ray`).

Both take the same tasks and report through the same callbacks: `started(index)`,
`finished(index, result)` and `tick()` (after each round of starts: redraw the progress).
The engine (qloom/explore.py) writes each result as it comes, so an interrupted sweep loses
nothing finished. A point whose worker dies is run again (up to `retries` times) and then
recorded as failed; a point past its timeout is killed and recorded as failed.
"""
from __future__ import annotations

import collections
import multiprocessing.connection
import os
import pathlib
import signal
import subprocess
import sys
import time

from qloom.compiler.errors import BadInput

BACKENDS = ("local", "ray")
TICK = 0.5          # seconds between checks for timeouts and progress updates
STARTUP = 120.0     # seconds a new local worker may take to import qloom before its point's clock runs


def failed(reason: str) -> dict:
    return {"status": "failed", "reason": reason, "timing": {}, "worker": None}


# ---------------------------------------------------------------- local: a pool of worker processes

def worker_main(read_fd: str, write_fd: str, data_path: str) -> None:
    """A local worker: run the points it reads from its pipe until it reads None (or the pipe closes).

    Workers are plain `python -c` processes joined by two pipes, not multiprocessing children:
    nothing re-imports the caller's __main__, so a script needs no `if __name__ == "__main__"` guard."""
    import pickle
    from multiprocessing.connection import Connection
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the parent decides what Ctrl-C stops
    inbox, outbox = Connection(int(read_fd), writable=False), Connection(int(write_fd), readable=False)
    with open(data_path, "rb") as f:
        data = pickle.load(f)
    from qloom.explore_worker import run_point
    while True:
        try:
            msg = inbox.recv()
        except EOFError:
            return
        if msg is None:
            return
        index, task = msg
        outbox.send(("start", index, None))            # the point's clock starts now, not at the import
        outbox.send(("done", index, run_point(task, data)))


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
    """One worker process, its two pipes, and the point it is running."""

    def __init__(self, data_path):
        from multiprocessing.connection import Connection
        down_r, down_w = os.pipe()                    # parent -> worker
        up_r, up_w = os.pipe()                        # worker -> parent
        code = ("import sys; from qloom.explore_backends import worker_main; worker_main(*sys.argv[1:])")
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(down_r), str(up_w), str(data_path)],
                                     pass_fds=(down_r, up_w), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL)   # stdout stays the caller's (--json)
        os.close(down_r)
        os.close(up_w)
        self.conn = Connection(down_w, readable=False)
        self.inbox = Connection(up_r, writable=False)
        self.index, self.since, self.sent, self.models = None, None, None, set()

    def send(self, index, task):
        self.index, self.since, self.sent = index, None, time.monotonic()
        self.models.add(task["source"].digest)
        self.conn.send((index, task))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self):
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass

    def kill(self):
        if self.alive():
            kill_tree(self.proc.pid)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.conn.close()
        self.inbox.close()


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


def _receive(slot, finished) -> None:
    """Read what the worker has sent: its point started (the clock starts) or finished."""
    while slot.index is not None and slot.inbox.poll():
        try:
            what, index, res = slot.inbox.recv()
        except (EOFError, OSError):                    # it died: the caller sees it is not alive
            return
        if what == "start":
            slot.since = time.monotonic()
        else:
            slot.index = None
            finished(index, res)


def run_local(tasks: dict, data, workers: int, timeout, retries, started, finished, tick) -> None:
    """Run `tasks` ({index: task}) on `workers` worker processes."""
    import pickle
    import tempfile
    with tempfile.TemporaryDirectory(prefix="qloom-explore-") as tmp:
        data_path = pathlib.Path(tmp) / "data.pickle"       # read once by each worker, never piped
        data_path.write_bytes(pickle.dumps(data))
        pending = collections.deque(sorted(tasks))
        attempts = collections.Counter()
        slots = [_Slot(data_path) for _ in range(max(1, min(workers, len(tasks))))]
        try:
            while pending or any(s.index is not None for s in slots):
                for s in slots:
                    if s.index is None and pending:
                        i = _pick(pending, tasks, s, slots)
                        attempts[i] += 1
                        s.send(i, tasks[i])
                        started(i)
                tick()
                multiprocessing.connection.wait([s.inbox for s in slots if s.index is not None], TICK)
                for k, s in enumerate(slots):
                    _receive(s, finished)
                    if s.index is None:
                        continue
                    i = s.index
                    if not s.alive():
                        code = s.proc.returncode
                        s.kill()
                        slots[k] = _Slot(data_path)
                        if attempts[i] <= retries:
                            pending.appendleft(i)
                        else:
                            finished(i, failed(f"worker died (exit code {code}) on {attempts[i]} attempts"))
                    elif timeout and time.monotonic() - (s.since or s.sent + STARTUP) > timeout:
                        s.kill()
                        slots[k] = _Slot(data_path)
                        finished(i, failed(f"timeout: killed after {timeout:g} s"))
        finally:
            for s in slots:
                s.stop()
            deadline = time.monotonic() + 2
            for s in slots:
                try:
                    s.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
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
            tick()
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
    finally:
        if own:
            ray.shutdown()
