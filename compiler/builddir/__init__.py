"""The build dir: one package for its contract (manifest, ports, beat packing, stimulus seeds, atomic writes).

A build dir holds accelerator.v, manifest.json, graph.npz and, with vectors,
inputs.npy and outputs.npy (graph.onnx where onnx is installed). Everything that
reads or writes one goes through here: hdl/emit.py writes it, the cocotb
testbench (sim/tb), the harness, `boards.Link`, the UART simulation and synthesis
read it. Only numpy and the standard library are imported (the testbench runs
inside a simulator's embedded Python), plus compiler/errors.py.

  manifest.py  Element, Port (beats <-> elements, frames <-> beats), Manifest (schema_version),
               BuildDirError, check_identifier, stimulus_seeds
  files.py     sha256, BuildDir and open_build_dir (checked reads), check_out_dir, atomic_dir,
               finish (hash every file, manifest last), rehash

Beats: element 0 in the least significant bits, Int elements in two's
complement, Bipolar elements one bit with 1 meaning +1 (docs/hardware.md).
Writes are atomic: the dir is built as a temporary sibling and renamed into
place, manifest.json (with the SHA-256 of every file) written last; readers
refuse a dir whose files are missing or do not match the manifest.
"""
from .files import (CACHE_DIRS, BuildDir, atomic_dir, check_out_dir, finish, is_build_dir, open_build_dir, rehash,
                    sha256)
from .manifest import (MANIFEST, SCHEMA_VERSION, BuildDirError, Element, Manifest, Port, check_identifier,
                       stimulus_seeds)

__all__ = ["SCHEMA_VERSION", "MANIFEST", "CACHE_DIRS", "BuildDirError", "check_identifier", "stimulus_seeds",
           "Element", "Port", "Manifest", "sha256", "BuildDir", "open_build_dir", "is_build_dir", "check_out_dir",
           "atomic_dir", "rehash", "finish"]
