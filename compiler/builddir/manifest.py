"""manifest.json and the stream ports it describes: Element, Port (beat packing), Manifest (schema_version).

Beats: element 0 in the least significant bits, Int elements in two's
complement, Bipolar elements one bit with 1 meaning +1 (docs/hardware.md).
`Manifest.from_dict` checks what it reads and refuses it with one line (BuildDirError).
Also the harness's stall LFSR seeds (stimulus_seeds), which the testbench shares.
Only numpy and the standard library are imported (the testbench runs inside a
simulator's embedded Python).
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import BadInput

SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class BuildDirError(BadInput):
    """A build dir that is missing, incomplete, inconsistent or not a qloom build dir."""


def check_identifier(name: str, what: str = "top module name") -> str:
    """`name` when it is a plain Verilog/Yosys identifier (it goes into scripts and file names)."""
    if not isinstance(name, str) or not _IDENT.match(name) or len(name) > 128:
        raise BadInput(f"{what} {name!r} is not a plain identifier (letters, digits, '_', not starting "
                       f"with a digit, at most 128 characters)")
    return name


def stimulus_seeds(seed: int, batch: int) -> tuple[int, int]:
    """The input/output stall LFSR seeds of one harness batch for a user seed (0 never occurs as
    a state the LFSRs cannot leave: the harness replaces 0 by a constant)."""
    return ((seed * 2654435761 + 2 * batch + 1) & 0xFFFFFFFF, (seed * 2246822519 + 2 * batch + 2) & 0xFFFFFFFF)


# ---------------------------------------------------------------- ports and beats

@dataclass(frozen=True)
class Element:
    type: str
    bits: int
    signed: bool
    bipolar: bool
    min: int
    max: int


@dataclass(frozen=True)
class Port:
    """One stream port of the accelerator: Verilog names, beat layout, frame shape."""
    payload: str
    valid: str
    ready: str
    width: int
    elements_per_beat: int
    frame_shape: tuple
    beats_per_frame: int
    element: Element

    @classmethod
    def for_stream(cls, prefix: str, dtype, n: int, shape) -> "Port":
        """The port of an Amaranth stream `prefix` carrying n elements of an ir element type per beat."""
        frame = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
        bipolar = str(dtype) == "bipolar"
        el = Element(str(dtype), int(dtype.bits), bool(getattr(dtype, "signed", False)), bipolar,
                     int(dtype.min), int(dtype.max))
        return cls(f"{prefix}__payload", f"{prefix}__valid", f"{prefix}__ready", el.bits * n, n,
                   tuple(int(s) for s in shape), frame // n, el)

    @classmethod
    def from_dict(cls, d: dict, where: str = "port") -> "Port":
        try:
            el = Element(**{f.name: d["element"][f.name] for f in dataclasses.fields(Element)})
            p = cls(str(d["payload"]), str(d["valid"]), str(d["ready"]), int(d["width"]),
                    int(d["elements_per_beat"]), tuple(int(s) for s in d["frame_shape"]), int(d["beats_per_frame"]),
                    el)
        except (KeyError, TypeError, ValueError) as e:
            raise BuildDirError(f"{where} is missing or malformed ({type(e).__name__}: {e})") from None
        for name in (p.payload, p.valid, p.ready):
            check_identifier(name, f"{where} signal name")
        frame = int(np.prod(p.frame_shape, dtype=np.int64)) if p.frame_shape else 1
        if (p.elements_per_beat < 1 or el.bits < 1 or el.bits > 64 or p.width != el.bits * p.elements_per_beat
                or p.beats_per_frame * p.elements_per_beat != frame or el.min > el.max):
            raise BuildDirError(f"{where} is inconsistent: width {p.width}, {p.elements_per_beat} elements of "
                                f"{el.bits} bits per beat, {p.beats_per_frame} beats for frame shape "
                                f"{list(p.frame_shape)}")
        return p

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["frame_shape"] = list(self.frame_shape)
        return d

    # convenience views
    @property
    def n(self) -> int:
        return self.elements_per_beat

    @property
    def bits(self) -> int:
        return self.element.bits

    @property
    def elems_per_frame(self) -> int:
        return self.n * self.beats_per_frame

    @property
    def nbytes(self) -> int:
        """Bytes per beat on a byte link (the UART top): ceil(width / 8)."""
        return (self.width + 7) // 8

    # ------------------------------------------------------------ elements <-> bits
    def check_values(self, values, what: str = "input") -> np.ndarray:
        """int64 values, or BadInput naming the first element outside the element type."""
        v = np.asarray(values)
        if v.dtype.kind == "f":
            if not np.all(np.isfinite(v)):
                raise BadInput(f"{what}: {int((~np.isfinite(v)).sum())} elements are NaN or infinite")
            if not np.all(v == np.round(v)):
                idx = tuple(int(i) for i in np.argwhere(v != np.round(v))[0])
                raise BadInput(f"{what}: element {idx} = {v[idx]!r} is not an integer")
        elif v.dtype.kind not in "iub":
            raise BadInput(f"{what}: expected integers, got dtype {v.dtype}")
        e = self.element
        bad = ((v != 1) & (v != -1)) if e.bipolar else ((v < e.min) | (v > e.max))
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            allowed = "-1 or +1" if e.bipolar else f"{e.min}..{e.max}"
            raise BadInput(f"{what}: element {idx} = {v[idx]} is out of range for {e.type} ({allowed})")
        return v.astype(np.int64)

    def encode(self, values) -> np.ndarray:
        """Element values -> their bit patterns (uint64)."""
        v = np.asarray(values, dtype=np.int64)
        if self.element.bipolar:
            return (v > 0).astype(np.uint64)
        return (v & ((1 << self.bits) - 1)).astype(np.uint64)

    def decode(self, codes) -> np.ndarray:
        """Bit patterns -> element values (int64)."""
        c = np.asarray(codes, dtype=np.int64) & ((1 << self.bits) - 1)
        if self.element.bipolar:
            return np.where(c & 1, 1, -1).astype(np.int64)
        if self.element.signed:
            return np.where(c >> (self.bits - 1), c - (1 << self.bits), c)
        return c

    # ------------------------------------------------------------ frames <-> beats
    def pack(self, frames) -> list[int]:
        """(F, *frame_shape) element values -> F * beats_per_frame beat payloads (Python ints)."""
        flat = np.asarray(frames).reshape(len(frames), -1)
        if flat.shape[1] != self.elems_per_frame:
            raise BadInput(f"a frame has {self.elems_per_frame} elements (shape {list(self.frame_shape)}), "
                           f"got {flat.shape[1]}")
        codes = self.encode(flat.reshape(-1, self.n))                      # (beats, n)
        if self.width <= 63:
            shifts = np.arange(self.n, dtype=np.uint64) * np.uint64(self.bits)
            return [int(w) for w in np.bitwise_or.reduce(codes << shifts, axis=1)]
        bitpos = np.arange(self.bits, dtype=np.uint64)                     # wide beats: via bytes
        bits = ((codes[:, :, None] >> bitpos) & np.uint64(1)).astype(np.uint8).reshape(len(codes), -1)
        packed = np.packbits(bits, axis=1, bitorder="little")
        return [int.from_bytes(row.tobytes(), "little") for row in packed]

    def unpack(self, words) -> np.ndarray:
        """Beat payloads (ints) -> (beats, n) element values."""
        words = list(words)
        if not words:
            return np.zeros((0, self.n), dtype=np.int64)
        if self.width <= 63:
            w = np.array(words, dtype=np.uint64)[:, None]
            shifts = np.arange(self.n, dtype=np.uint64) * np.uint64(self.bits)
            return self.decode(((w >> shifts) & np.uint64((1 << self.bits) - 1)).astype(np.int64))
        nbytes = (self.width + 7) // 8
        raw = np.frombuffer(b"".join(int(x).to_bytes(nbytes, "little") for x in words), dtype=np.uint8)
        bits = np.unpackbits(raw.reshape(len(words), nbytes), axis=1, bitorder="little")[:, :self.width]
        bits = bits.reshape(len(words), self.n, self.bits).astype(np.int64)
        return self.decode((bits << np.arange(self.bits, dtype=np.int64)).sum(axis=2))

    def to_bytes(self, frame) -> bytes:
        """One frame as the UART link sends it: each beat ceil(width/8) bytes, least significant first."""
        return b"".join(w.to_bytes(self.nbytes, "little") for w in self.pack(np.asarray(frame)[None]))

    def from_bytes(self, data: bytes) -> np.ndarray:
        nbytes = (self.width + 7) // 8
        words = [int.from_bytes(data[b * nbytes:(b + 1) * nbytes], "little") for b in range(self.beats_per_frame)]
        return self.unpack(words).reshape(self.frame_shape)


# ---------------------------------------------------------------- manifest

@dataclass(frozen=True)
class Manifest:
    """manifest.json. Read-only; `m["key"]` reads the JSON view (to_dict) for scripts."""
    top: str
    input: Port
    output: Port
    graph: str = "qloom"
    graph_hash: str = ""
    clock: str = "clk"
    reset: str = "rst"
    reset_kind: str = "synchronous, active high"
    folding: dict = field(default_factory=dict)
    ii_estimate: int | None = None
    latency_estimate: int | None = None
    resources_estimate: dict = field(default_factory=dict)
    stages: list = field(default_factory=list)
    nodes: list = field(default_factory=list)
    vectors: dict | None = None
    files: dict = field(default_factory=dict)          # name -> sha256 of every file written with it
    frontend: dict = field(default_factory=dict)       # the source model's float glue (Accelerator.load)
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, d: dict, where: str = MANIFEST) -> "Manifest":
        if not isinstance(d, dict):
            raise BuildDirError(f"{where} does not hold a JSON object")
        ver = d.get("schema_version", 1)
        if not isinstance(ver, int) or ver > SCHEMA_VERSION:
            raise BuildDirError(f"{where} has schema_version {ver!r}; this qloom reads up to {SCHEMA_VERSION} "
                                f"(recompile with this version)")
        for key in ("top", "ports"):
            if key not in d:
                raise BuildDirError(f"{where} has no '{key}' (is this a qloom build dir?)")
        ports = d["ports"]
        if not isinstance(ports, dict):
            raise BuildDirError(f"{where}: 'ports' must be an object")
        top = d["top"]
        try:
            check_identifier(top)
            check_identifier(d.get("clock", "clk"), "clock name")
            check_identifier(d.get("reset", "rst"), "reset name")
        except BadInput as e:
            raise BuildDirError(f"{where}: {e}") from None
        inp = Port.from_dict(ports.get("input") or {}, f"{where}: port 'input'")
        out = Port.from_dict(ports.get("output") or {}, f"{where}: port 'output'")
        known = {f.name for f in dataclasses.fields(cls)} - {"input", "output", "top", "schema_version"}
        kw = {k: d[k] for k in known if k in d}
        for k, t in (("ii_estimate", int), ("latency_estimate", int)):
            if kw.get(k) is not None and (not isinstance(kw[k], int) or kw[k] < 0):
                raise BuildDirError(f"{where}: '{k}' must be a non-negative integer, got {kw[k]!r}")
        return cls(top=top, input=inp, output=out, schema_version=ver, **kw)

    def to_dict(self) -> dict:
        d = {"schema_version": self.schema_version, "top": self.top, "graph": self.graph,
             "graph_hash": self.graph_hash, "clock": self.clock, "reset": self.reset, "reset_kind": self.reset_kind,
             "ports": {"input": self.input.to_dict(), "output": self.output.to_dict()}}
        for f in dataclasses.fields(self):
            if f.name not in d and f.name not in ("input", "output"):
                d[f.name] = getattr(self, f.name)
        if d.get("vectors") is None:
            d.pop("vectors")
        return d

    def __getitem__(self, key):
        return self.to_dict()[key]

    def get(self, key, default=None):
        return self.to_dict().get(key, default)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n"


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")

