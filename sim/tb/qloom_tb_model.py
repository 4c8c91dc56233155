"""Model side of the qloom testbench: the build dir's vectors and beat (un)packing.

No cocotb and no amaranth here (the simulator's embedded Python imports this):
numpy and the standard library only. The packing is the one hdl/streams.py
documents: element 0 of a beat in the least significant bits, Int elements in
two's complement, Bipolar elements one bit with 1 meaning +1.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np


class Port:
    """One stream port of manifest.json ("input" or "output")."""

    def __init__(self, info: dict):
        self.info = info
        self.payload, self.valid, self.ready = info["payload"], info["valid"], info["ready"]
        self.width = int(info["width"])
        self.n = int(info["elements_per_beat"])
        self.beats_per_frame = int(info["beats_per_frame"])
        self.frame_shape = tuple(info["frame_shape"])
        el = info["element"]
        self.bits = int(el["bits"])
        self.signed = bool(el["signed"])
        self.bipolar = bool(el["bipolar"])
        self.type = el["type"]
        self.elems_per_frame = int(np.prod(self.frame_shape, dtype=np.int64)) if self.frame_shape else 1

    # ------------------------------------------------------------ elements <-> bits
    def encode(self, values: np.ndarray) -> np.ndarray:
        """Element values -> their bit patterns (uint64)."""
        v = np.asarray(values, dtype=np.int64)
        if self.bipolar:
            return (v > 0).astype(np.uint64)
        return (v & ((1 << self.bits) - 1)).astype(np.uint64)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Bit patterns -> element values (int64)."""
        c = np.asarray(codes, dtype=np.int64) & ((1 << self.bits) - 1)
        if self.bipolar:
            return np.where(c & 1, 1, -1).astype(np.int64)
        if self.signed:
            return np.where(c >> (self.bits - 1), c - (1 << self.bits), c)
        return c

    # ------------------------------------------------------------ frames <-> beats
    def pack(self, frames: np.ndarray) -> list[int]:
        """(F, *frame_shape) element values -> F * beats_per_frame beat payloads (Python ints)."""
        flat = np.asarray(frames).reshape(len(frames), -1)
        assert flat.shape[1] == self.elems_per_frame, (flat.shape, self.frame_shape)
        codes = self.encode(flat.reshape(-1, self.n))                      # (beats, n)
        if self.width <= 63:
            shifts = (np.arange(self.n, dtype=np.uint64) * np.uint64(self.bits))
            words = np.bitwise_or.reduce(codes << shifts, axis=1)
            return [int(w) for w in words]
        # wide beats: bits little-endian -> bytes -> int
        bitpos = np.arange(self.bits, dtype=np.uint64)
        bits = ((codes[:, :, None] >> bitpos) & np.uint64(1)).astype(np.uint8).reshape(len(codes), -1)
        packed = np.packbits(bits, axis=1, bitorder="little")
        return [int.from_bytes(row.tobytes(), "little") for row in packed]

    def unpack(self, words) -> np.ndarray:
        """Beat payloads -> (beats, n) element values. `words` are ints (None is not allowed)."""
        words = list(words)
        if self.width <= 63:
            w = np.array(words, dtype=np.uint64)[:, None]
            shifts = (np.arange(self.n, dtype=np.uint64) * np.uint64(self.bits))
            codes = (w >> shifts) & np.uint64((1 << self.bits) - 1)
            return self.decode(codes.astype(np.int64))
        nbytes = (self.width + 7) // 8
        raw = np.frombuffer(b"".join(int(x).to_bytes(nbytes, "little") for x in words), dtype=np.uint8)
        bits = np.unpackbits(raw.reshape(len(words), nbytes), axis=1, bitorder="little")[:, :self.width]
        bits = bits.reshape(len(words), self.n, self.bits).astype(np.int64)
        codes = (bits << np.arange(self.bits, dtype=np.int64)).sum(axis=2)
        return self.decode(codes)


class BuildDir:
    """manifest.json + inputs.npy + outputs.npy of one build dir."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.manifest = json.loads((self.path / "manifest.json").read_text())
        m = self.manifest
        self.top = m["top"]
        self.clock, self.reset = m.get("clock", "clk"), m.get("reset", "rst")
        self.inp, self.out = Port(m["ports"]["input"]), Port(m["ports"]["output"])
        vec = m.get("vectors") or {}
        self.x = np.load(self.path / vec.get("inputs", "inputs.npy"))
        self.y = np.load(self.path / vec.get("outputs", "outputs.npy"))
        self.ii_estimate = m.get("ii_estimate")
        self.latency_estimate = m.get("latency_estimate")

    def frames(self, n: int | None):
        """(x, y) for n frames: the stored vectors, repeated when n is more than there are."""
        have = len(self.x)
        n = have if n is None else int(n)
        idx = np.arange(n) % have
        return self.x[idx], self.y[idx]
