"""A build dir on disk: SHA-256 of its files, checked reads (BuildDir, open_build_dir), atomic writes.

Writes are atomic: the dir is built as a temporary sibling and renamed into
place, manifest.json (with the SHA-256 of every file) written last; readers
refuse a dir whose files are missing or do not match the manifest. Only numpy
and the standard library are imported.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np

from ..errors import BadInput
from .manifest import MANIFEST, BuildDirError, Manifest, _json_default

CACHE_DIRS = ("sim_build",)        # content-addressed caches carried over when a dir is rewritten


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- reading

@dataclass
class BuildDir:
    """An opened, checked build dir."""
    path: pathlib.Path
    manifest: Manifest

    @property
    def has_vectors(self) -> bool:
        return bool(self.manifest.vectors)

    def file(self, name) -> pathlib.Path:
        return self.path / name

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, outputs) as int64, checked against the ports."""
        v = self.manifest.vectors or {}
        try:
            x = np.load(self.path / v.get("inputs", "inputs.npy"), allow_pickle=False)
            y = np.load(self.path / v.get("outputs", "outputs.npy"), allow_pickle=False)
        except (OSError, ValueError) as e:
            raise BuildDirError(f"{self.path}: the test vectors cannot be read ({type(e).__name__}: {e})") from None
        m = self.manifest
        for arr, port, name in ((x, m.input, "inputs.npy"), (y, m.output, "outputs.npy")):
            if arr.ndim < 1 or tuple(arr.shape[1:]) != tuple(port.frame_shape):
                raise BuildDirError(f"{self.path / name}: shape {arr.shape} does not match the port's frame "
                                    f"shape {list(port.frame_shape)}")
            try:
                port.check_values(arr, f"{self.path / name}")
            except BadInput as e:
                raise BuildDirError(str(e)) from None
        if len(x) != len(y):
            raise BuildDirError(f"{self.path}: inputs.npy holds {len(x)} frames, outputs.npy {len(y)}")
        return x.astype(np.int64), y.astype(np.int64)

    def frames(self, n: int | None):
        """(x, y) for n frames: the stored vectors, repeated when n is more than there are."""
        x, y = self.vectors()
        if len(x) == 0:
            raise BuildDirError(f"{self.path}: inputs.npy holds no frames")
        idx = np.arange(len(x) if n is None else int(n)) % len(x)
        return x[idx], y[idx]


def open_build_dir(path, *, need=("accelerator.v",), vectors: bool = False, verify: bool = True,
                   error=BuildDirError) -> BuildDir:
    """Open and check a build dir. need: files that must be present; vectors: inputs/outputs too;
    verify: every file the manifest lists must hash as written. Raises `error` (a BuildDirError
    subclass) with one line naming what is wrong."""
    p = pathlib.Path(path)
    if not str(path).strip():
        raise error("the build dir path is empty")
    if not p.is_dir():
        raise error(f"build dir {p} does not exist (write one with `qloom compile SPEC --out {p}`)")
    mp = p / MANIFEST
    if not mp.is_file():
        raise error(f"{p} is not a build dir: no {MANIFEST} (write one with `qloom compile`)")
    want = list(need) + (["inputs.npy", "outputs.npy"] if vectors else [])
    missing = [f for f in want if not (p / f).is_file()]
    if missing:
        raise error(f"build dir {p} is incomplete: missing {', '.join(missing)} (`qloom compile` writes "
                    f"{', '.join(['accelerator.v', 'manifest.json', 'graph.npz', 'inputs.npy', 'outputs.npy'])})")
    try:
        raw = json.loads(mp.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{mp} is not valid JSON: {e}") from None
    try:
        m = Manifest.from_dict(raw, str(mp))
    except BadInput as e:
        raise error(str(e)) from None
    if vectors and not m.vectors and m.schema_version >= 2:
        raise error(f"build dir {p} has no test vectors (compile with inputs, e.g. `qloom compile ... "
                    f"--frames N`, or save(dir, x_float=...))")
    if verify:
        for name, digest in m.files.items():
            f = p / name
            if not f.is_file():
                raise error(f"build dir {p} is incomplete: {name} is listed in the manifest but missing")
            if sha256(f) != digest:
                raise error(f"build dir {p} is inconsistent: {name} changed after the manifest was written "
                            f"(recompile into an empty dir)")
    return BuildDir(p, m)


# ---------------------------------------------------------------- writing

def is_build_dir(path) -> bool:
    return (pathlib.Path(path) / MANIFEST).is_file()


def check_out_dir(out_dir) -> pathlib.Path:
    """The output dir, if a build dir may be written there: new, empty, or an old build dir."""
    if out_dir is None or not str(out_dir).strip():
        raise BadInput("the output dir is empty: give --out DIR")
    out = pathlib.Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BadInput(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not is_build_dir(out):
        raise BadInput(f"output dir {out} is not empty and is not a qloom build dir; refusing to replace it "
                       f"(choose a new or empty dir)")
    return out


@contextlib.contextmanager
def atomic_dir(out_dir):
    """Yield a temporary sibling of `out_dir` to fill; on success it replaces `out_dir` whole.

    An existing `out_dir` must be empty or a qloom build dir (it is replaced, keeping only its
    content-addressed caches); anything else is refused, so a typo cannot delete a user's files.
    On an exception (Ctrl-C included) the temporary dir is removed and `out_dir` is untouched.
    """
    out = check_out_dir(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if out.is_dir():
            for c in CACHE_DIRS:
                if (out / c).is_dir():
                    shutil.move(str(out / c), str(tmp / c))
            old = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def rehash(path, note: str) -> Manifest:
    """After a deliberate edit of a build dir's files (a planted fault, a hand-patched netlist): hash
    them into its manifest again, with `note` saying what was done (kept in manifest["notes"])."""
    bd = open_build_dir(path, need=(), verify=False)
    m = finish(bd.path, bd.manifest)
    notes = json.loads((bd.path / MANIFEST).read_text()).get("notes", []) + [note]
    raw = {**m.to_dict(), "notes": notes}
    (bd.path / MANIFEST).write_text(json.dumps(raw, indent=2, default=_json_default) + "\n")
    return m


def finish(tmp: pathlib.Path, manifest: Manifest) -> Manifest:
    """Hash every file in `tmp` into the manifest and write manifest.json last."""
    files = {f.name: sha256(f) for f in sorted(tmp.iterdir()) if f.is_file() and f.name != MANIFEST}
    m = dataclasses.replace(manifest, files=files)
    (tmp / MANIFEST).write_text(m.to_json())
    return m
