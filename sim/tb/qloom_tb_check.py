"""Checker side of the qloom testbench: every output element against the reference.

No cocotb and no amaranth imports: numpy and the standard library only.
"""
from __future__ import annotations

import json

import numpy as np

from qloom_tb_model import Port

MAX_REPORTED = 20


class Scoreboard:
    """Compares received output beats with the reference outputs of the frames sent.

    `got` beats are ints, or None for a beat the simulator read with X/Z bits
    (every element of such a beat counts as a mismatch and is reported as 'X').
    """

    def __init__(self, port: Port, expected: np.ndarray, waves: str | None = None):
        self.port = port
        self.expected = np.asarray(expected).reshape(len(expected), -1)   # (frames, elements)
        self.frames = len(self.expected)
        self.waves = waves
        self.beats_expected = self.frames * port.beats_per_frame
        self.mismatches = 0
        self.first: list[dict] = []
        self.got: np.ndarray | None = None
        self.received = 0
        self.extra_beats = 0
        self.unknown_beats = 0

    def check(self, beats: list, extra_beats: int = 0) -> None:
        """All received beats at once (harness) or as collected (per-cycle driver)."""
        p = self.port
        self.received = len(beats)
        self.extra_beats = int(extra_beats)
        beats = beats[:self.beats_expected]
        n_beats = len(beats)
        unknown = np.array([b is None for b in beats], dtype=bool)
        self.unknown_beats = int(unknown.sum())
        words = [0 if b is None else b for b in beats]
        vals = p.unpack(words) if n_beats else np.zeros((0, p.n), dtype=np.int64)     # (beats, n)
        flat = np.full(self.frames * p.elems_per_frame, np.iinfo(np.int64).min, dtype=np.int64)
        flat[:vals.size] = vals.reshape(-1)
        unknown_el = np.zeros(flat.shape, dtype=bool)
        unknown_el[:unknown.size * p.n] = np.repeat(unknown, p.n)
        missing_el = np.zeros(flat.shape, dtype=bool)
        missing_el[vals.size:] = True
        got = flat.reshape(self.frames, p.elems_per_frame)
        bad = (got != self.expected) | unknown_el.reshape(got.shape) | missing_el.reshape(got.shape)
        self.got = np.where(missing_el.reshape(got.shape) | unknown_el.reshape(got.shape), 0, got)
        self.mismatches = int(bad.sum())
        for f, e in np.argwhere(bad)[:MAX_REPORTED]:
            k = f * p.elems_per_frame + e
            g = "missing" if missing_el[k] else ("X" if unknown_el[k] else int(got[f, e]))
            self.first.append({
                "frame": int(f), "element": int(e),
                "index": [int(i) for i in np.unravel_index(int(e), p.frame_shape)] if p.frame_shape else [],
                "beat": int(k // p.n), "lane": int(k % p.n),
                "expected": int(self.expected[f, e]), "got": g})

    @property
    def ok(self) -> bool:
        return self.mismatches == 0 and self.extra_beats == 0 and self.received >= self.beats_expected

    def describe(self, limit: int = 5) -> str:
        """Human-readable verdict: every line names frame, element, expected and got."""
        if self.ok:
            return f"bit-exact: {self.frames} frames, {self.frames * self.port.elems_per_frame} elements"
        lines = []
        if self.mismatches:
            lines.append(f"{self.mismatches} of {self.frames * self.port.elems_per_frame} output elements "
                         f"differ from the reference ({self.frames} frames)")
        for m in self.first[:limit]:
            lines.append(f"  frame {m['frame']}, element {m['element']} {tuple(m['index'])} "
                         f"(beat {m['beat']}, lane {m['lane']}): expected {m['expected']}, got {m['got']}")
        if self.received < self.beats_expected:
            lines.append(f"received {self.received} of {self.beats_expected} output beats")
        if self.extra_beats:
            lines.append(f"the design produced {self.extra_beats} output beats more than expected")
        lines.append(f"waveform: {self.waves}" if self.waves else
                     "waveform: none recorded (rerun with waves=True / --waves)")
        return "\n".join(lines)


def write_results(path, **fields) -> None:
    def conv(o):
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(type(o))
    with open(path, "w") as f:
        json.dump(fields, f, default=conv)
