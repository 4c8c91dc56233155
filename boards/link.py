"""Host side of the UART link: `Link` sends input frames and reads result frames.

Works with any serial-port-like object with `write(bytes)` and `read(n) -> bytes`
(pyserial's `serial.Serial`, a socket file, a simulated line). Framing is the one
boards/top.py implements (docs/boards.md): host sends 0xA5 + input frame bytes,
the board answers 0x5A + output frame bytes; each stream beat is ceil(width/8)
bytes, least significant first, element 0 in the least significant bits.

Only numpy and the standard library are imported (it also runs inside a
simulator's embedded Python).
"""
from __future__ import annotations

import collections
import json
import pathlib

import numpy as np

SYNC_IN = 0xA5
SYNC_OUT = 0x5A


class LinkError(RuntimeError):
    """The board did not answer as the framing says (timeout, garbage)."""


class _Port:
    def __init__(self, info: dict):
        self.width = int(info["width"])
        self.n = int(info["elements_per_beat"])
        self.beats = int(info["beats_per_frame"])
        self.shape = tuple(info["frame_shape"])
        el = info["element"]
        self.bits, self.signed, self.bipolar = int(el["bits"]), bool(el["signed"]), bool(el["bipolar"])
        self.lo, self.hi = int(el["min"]), int(el["max"])
        self.nbytes = (self.width + 7) // 8
        self.elems = self.n * self.beats

    def encode(self, frame) -> bytes:
        v = np.asarray(frame, dtype=np.int64).reshape(-1)
        if v.size != self.elems:
            raise ValueError(f"a frame has {self.elems} elements (shape {self.shape}), got {v.size}")
        if self.bipolar:
            if not np.isin(v, (-1, 1)).all():
                raise ValueError("bipolar input elements must be -1 or +1")
            codes = (v > 0).astype(np.int64)
        else:
            if v.min() < self.lo or v.max() > self.hi:
                raise ValueError(f"input elements must lie in [{self.lo}, {self.hi}], got [{v.min()}, {v.max()}]")
            codes = v & ((1 << self.bits) - 1)
        out = bytearray()
        for b in range(self.beats):
            word = 0
            for k, c in enumerate(codes[b * self.n:(b + 1) * self.n]):
                word |= int(c) << (k * self.bits)
            out += word.to_bytes(self.nbytes, "little")
        return bytes(out)

    def decode(self, data: bytes) -> np.ndarray:
        vals = []
        mask = (1 << self.bits) - 1
        for b in range(self.beats):
            word = int.from_bytes(data[b * self.nbytes:(b + 1) * self.nbytes], "little")
            for k in range(self.n):
                c = (word >> (k * self.bits)) & mask
                if self.bipolar:
                    c = 1 if c & 1 else -1
                elif self.signed and c >> (self.bits - 1):
                    c -= 1 << self.bits
                vals.append(c)
        return np.array(vals, dtype=np.int64).reshape(self.shape)


class Link:
    """Frames to a board running a qloom UART top, results back.

    port: serial-port-like (write(bytes), read(n) -> bytes; a short or empty read means timeout).
    manifest: the build dir's manifest.json as a dict, or the build dir (or manifest path).
    window: frames sent ahead of the results read (the board buffers about one input
    frame per FIFO; 2 is safe for every qloom accelerator).
    max_skip: bytes tolerated before a result's 0x5A before giving up.
    """

    def __init__(self, port, manifest, window: int = 2, max_skip: int = 64):
        if not isinstance(manifest, dict):
            p = pathlib.Path(manifest)
            manifest = json.loads((p / "manifest.json" if p.is_dir() else p).read_text())
        self.port, self.manifest = port, manifest
        self.input, self.output = _Port(manifest["ports"]["input"]), _Port(manifest["ports"]["output"])
        self.window, self.max_skip = max(1, int(window)), int(max_skip)
        self.skipped = 0

    @classmethod
    def open(cls, device: str, manifest, baud: int = 115200, timeout: float = 2.0, **kw) -> "Link":
        """Open a serial device with pyserial (pip install pyserial) and return a Link on it."""
        import serial  # the optional dependency, only for real ports
        return cls(serial.Serial(device, baudrate=baud, timeout=timeout), manifest, **kw)

    # ------------------------------------------------------------ framing
    def encode(self, frame) -> bytes:
        """The bytes that carry one input frame (sync byte included)."""
        return bytes([SYNC_IN]) + self.input.encode(frame)

    @property
    def result_bytes(self) -> int:
        return 1 + self.output.nbytes * self.output.beats

    def _read_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.port.read(n - len(buf))
            if not chunk:
                raise LinkError(f"timed out: got {len(buf)} of {n} bytes of a result frame")
            buf += chunk
        return bytes(buf)

    # ------------------------------------------------------------ use
    def send(self, frame) -> None:
        self.port.write(self.encode(frame))
        flush = getattr(self.port, "flush", None)
        if flush is not None:
            flush()

    def recv(self) -> np.ndarray:
        """Read one result frame (skipping bytes before its 0x5A)."""
        skipped = 0
        while True:
            b = self._read_exact(1)[0]
            if b == SYNC_OUT:
                break
            skipped += 1
            if skipped > self.max_skip:
                raise LinkError(f"no result sync byte 0x{SYNC_OUT:02X} in {skipped} bytes")
        self.skipped += skipped
        return self.output.decode(self._read_exact(self.result_bytes - 1))

    def infer(self, frames) -> np.ndarray:
        """Run frames (batch first, integer input codes) through the board; results (batch first)."""
        frames = np.asarray(frames)
        out = []
        pending = collections.deque()
        for f in frames:
            if len(pending) >= self.window:
                pending.popleft()
                out.append(self.recv())
            self.send(f)
            pending.append(1)
        while pending:
            pending.popleft()
            out.append(self.recv())
        return np.stack(out) if out else np.zeros((0,) + self.output.shape, dtype=np.int64)

    __call__ = infer
