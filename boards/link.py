"""Host side of the UART link: `Link` sends input frames and reads result frames.

Works with any serial-port-like object with `write(bytes)` and `read(n) -> bytes`
(pyserial's `serial.Serial`, a socket file, a simulated line). Framing is the one
boards/top.py implements (docs/boards.md): host sends 0xA5 + input frame bytes,
the board answers 0x5A + output frame bytes; each stream beat is ceil(width/8)
bytes, least significant first, element 0 in the least significant bits.

Beats and ports are qloom.compiler.builddir's (numpy and the standard library
only, so this also runs inside a simulator's embedded Python).
"""
from __future__ import annotations

import collections
import json
import pathlib

import numpy as np

from qloom.compiler import builddir
from qloom.compiler.errors import ToolFailure

SYNC_IN = 0xA5
SYNC_OUT = 0x5A
SYNC_TEST = 0xB5
SYNC_TEST_OUT = 0x5B


def pattern_beats(width: int, n: int) -> list[int]:
    """The input beats of the board top's test-pattern mode: an LFSR of max(width, 2) bits from 1,
    shifting right with bit 0 ^ bit 1 coming in at the top, one step per beat; a beat is its low
    `width` bits (any bit pattern is a valid beat of every element type)."""
    w = max(int(width), 2)
    x, out = 1, []
    for _ in range(n):
        out.append(x & ((1 << width) - 1))
        x = (x >> 1) | (((x ^ (x >> 1)) & 1) << (w - 1))
    return out


def checksum(beats, width: int) -> int:
    """The board's output checksum: c = rotl32(c, 1) ^ (the beat's 32-bit chunks XORed), from 0."""
    c = 0
    for b in beats:
        fold = 0
        for k in range(0, max(int(width), 1), 32):
            fold ^= (int(b) >> k) & 0xFFFFFFFF
        c = (((c << 1) | (c >> 31)) & 0xFFFFFFFF) ^ fold
    return c


def synthesized_baud(build_dir) -> int:
    """The UART rate a build dir's board top was synthesised with: the "baud" of its synth-*/synth.json
    (`qloom synth` writes it). Raises ValueError when there is none, or several that disagree."""
    p = pathlib.Path(build_dir) if isinstance(build_dir, (str, pathlib.PurePath)) else None
    if p is None:
        raise ValueError("give baud= (the board top's UART rate): the manifest is not a build dir path")
    p = p.parent if p.is_file() else p
    rates = {}
    for f in sorted(p.glob("synth-*/synth.json")):
        try:
            rate = json.loads(f.read_text()).get("baud")
        except (OSError, ValueError):
            continue
        if rate:
            rates[f.parent.name] = int(rate)
    if len(set(rates.values())) != 1:
        found = ", ".join(f"{k}: {v}" for k, v in rates.items()) or "no synth-*/synth.json with a baud"
        raise ValueError(f"give baud= (the board top's UART rate; {found} in {p}); `qloom synth` builds the "
                         f"board's fastest by default: 3000000 on the iCEBreaker, 1000000 on the ULX3S")
    return next(iter(rates.values()))


class LinkError(ToolFailure):
    """The board did not answer as the framing says (timeout, garbage)."""


class Link:
    """Frames to a board running a qloom UART top, results back.

    port: serial-port-like (write(bytes), read(n) -> bytes; a short or empty read means timeout).
    manifest: the build dir's manifest.json as a dict, or the build dir (or manifest path), or an
      object with the two builddir.Port attributes `input` and `output`.
    window: frames sent ahead of the results read (the board buffers about one input
    frame per FIFO; 2 is safe for every qloom accelerator).
    max_skip: bytes tolerated before a result's 0x5A before giving up.
    """

    def __init__(self, port, manifest, window: int = 2, max_skip: int = 64):
        if isinstance(manifest, builddir.Manifest) or (hasattr(manifest, "input") and hasattr(manifest, "output")):
            pass                  # a Manifest, or anything with its two Ports
        elif isinstance(manifest, dict):
            manifest = builddir.Manifest.from_dict(manifest)
        else:
            p = pathlib.Path(manifest)
            manifest = builddir.open_build_dir(p.parent if p.is_file() else p, need=(), verify=False).manifest
        self.port, self.manifest = port, manifest
        self.input, self.output = manifest.input, manifest.output
        self.window, self.max_skip = max(1, int(window)), int(max_skip)
        self.skipped = 0

    @classmethod
    def open(cls, device: str, manifest, baud: int | None = None, timeout: float = 2.0, **kw) -> "Link":
        """Open a serial device with pyserial (pip install pyserial) and return a Link on it. baud: the
        board top's rate; by default the one `qloom synth` built it with (`synthesized_baud`)."""
        if baud is None:
            baud = synthesized_baud(manifest)
        import serial  # the optional dependency, only for real ports
        return cls(serial.Serial(device, baudrate=baud, timeout=timeout), manifest, **kw)

    # ------------------------------------------------------------ framing
    def encode(self, frame) -> bytes:
        """The bytes that carry one input frame (sync byte included)."""
        v = np.asarray(frame).reshape(-1)
        if v.size != self.input.elems_per_frame:
            raise ValueError(f"a frame has {self.input.elems_per_frame} elements (shape "
                             f"{list(self.input.frame_shape)}), got {v.size}")
        return bytes([SYNC_IN]) + self.input.to_bytes(self.input.check_values(v, "input frame"))

    @property
    def result_bytes(self) -> int:
        return 1 + self.output.nbytes * self.output.beats_per_frame

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
        return self.output.from_bytes(self._read_exact(self.result_bytes - 1))

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
        return np.stack(out) if out else np.zeros((0,) + self.output.frame_shape, dtype=np.int64)

    __call__ = infer

    # ------------------------------------------------------------ test-pattern mode
    def pattern_frames(self, frames: int) -> np.ndarray:
        """The input frames (integer codes, batch first) the board's test-pattern mode sends."""
        beats = pattern_beats(self.input.width, frames * self.input.beats_per_frame)
        return self.input.unpack(beats).reshape((frames,) + tuple(self.input.frame_shape))

    def expected_checksum(self, outputs) -> int:
        """The checksum of result frames (batch first) as the board computes it."""
        outputs = np.asarray(outputs)
        return checksum(self.output.pack(outputs.reshape(len(outputs), -1)), self.output.width)

    def benchmark(self, frames: int, reference=None, clock_hz: float | None = None) -> dict:
        """Run `frames` frames from the board's on-chip test pattern (the line carries only the command
        and the 9-byte report). reference: a function from input frames to result frames (e.g.
        Accelerator.reference) to check the output checksum. Returns frames, cycles, checksum,
        ok (None without reference) and frames_per_second (with clock_hz, the board's clock)."""
        if not 0 <= frames < 2 ** 32:
            raise ValueError(f"frames must be in 0..2**32-1, got {frames}")
        self.port.write(bytes([SYNC_TEST]) + int(frames).to_bytes(4, "little"))
        flush = getattr(self.port, "flush", None)
        if flush is not None:
            flush()
        skipped = 0
        while self._read_exact(1)[0] != SYNC_TEST_OUT:
            skipped += 1
            if skipped > self.max_skip:
                raise LinkError(f"no test report sync byte 0x{SYNC_TEST_OUT:02X} in {skipped} bytes")
        rep = self._read_exact(8)
        cycles, got = int.from_bytes(rep[:4], "little"), int.from_bytes(rep[4:], "little")
        ok = None
        if reference is not None:
            ok = got == self.expected_checksum(reference(self.pattern_frames(frames)))
        return {"frames": frames, "cycles": cycles, "checksum": got, "ok": ok,
                "frames_per_second": frames * clock_hz / cycles if clock_hz and cycles else None}
