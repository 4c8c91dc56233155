# amaranth: UnusedElaboratable=no
"""The build-dir contract (compiler/builddir.py): manifest, ports, packing, atomic writes, checked reads."""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qloom
from qloom.compiler import builddir, ir
from qloom.compiler.errors import BadInput, QloomError
from qloom.examples import tfc


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    model, x = tfc.build(2, 2, n_in=64)
    acc = qloom.compile(model, x[:64], target_ii=64)
    d = tmp_path_factory.mktemp("bd") / "small"
    m = acc.save(d, x_float=x[:8])
    return d, acc, m, x


def test_manifest_round_trip_and_schema(small):
    d, acc, m, _ = small
    raw = json.loads((d / "manifest.json").read_text())
    assert raw["schema_version"] == builddir.SCHEMA_VERSION
    back = builddir.Manifest.from_dict(raw)
    assert back == m
    assert set(m.files) >= {"accelerator.v", "graph.npz", "inputs.npy", "outputs.npy"}
    assert m["ports"]["input"]["width"] == m.input.width            # the JSON view
    bd = builddir.open_build_dir(d, vectors=True)
    x, y = bd.vectors()
    assert (y == acc.reference(x)).all()


@pytest.mark.parametrize("dtype,n", [(ir.Int(4, False), 8), (ir.Int(5, True), 3), (ir.Bipolar, 64),
                                     (ir.Int(8, True), 40), (ir.Int(2, True), 1), (ir.Int(16, True), 5)])
def test_pack_unpack_round_trip(dtype, n):
    p = builddir.Port.for_stream("i", dtype, n, (2 * n,))
    rng = np.random.default_rng(n)
    v = rng.integers(dtype.min, dtype.max + 1, (5, 2 * n))
    if dtype is ir.Bipolar:
        v = np.where(v > 0, 1, -1)
    words = p.pack(v)
    assert len(words) == 10 and all(0 <= w < (1 << p.width) for w in words)
    assert (p.unpack(words).reshape(v.shape) == v).all()
    assert (p.from_bytes(p.to_bytes(v[0])) == v[0]).all()


def test_port_checks_values():
    p = builddir.Port.for_stream("i", ir.Int(4, True), 2, (4,))
    with pytest.raises(BadInput, match=r"element \(1,\) = 8 is out of range for int4 \(-8\.\.7\)"):
        p.check_values(np.array([0, 8, 1, 2]))
    with pytest.raises(BadInput, match="not an integer"):
        p.check_values(np.array([0.0, 1.5, 1, 2]))
    with pytest.raises(BadInput, match="NaN"):
        p.check_values(np.array([0.0, np.nan, 1, 2]))


def test_rewrite_replaces_the_whole_dir(small, tmp_path):
    _, acc, _, x = small
    d = tmp_path / "b"
    acc.save(d, x_float=x[:4])
    (d / "synth-icebreaker").mkdir()
    (d / "synth-icebreaker" / "stale.json").write_text("{}")
    m = acc.save(d)                                     # no vectors this time
    assert not (d / "synth-icebreaker").exists() and not (d / "inputs.npy").exists()
    assert m.vectors is None
    assert not list(tmp_path.glob(".b.*"))              # no temporary siblings left


def test_refuses_to_replace_a_foreign_dir(small, tmp_path):
    _, acc, _, _ = small
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(BadInput, match="not a qloom build dir; refusing"):
        acc.save(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "precious"
    with pytest.raises(BadInput, match="empty"):
        acc.save("")


def test_interrupted_write_leaves_the_old_dir(small, tmp_path, monkeypatch):
    _, acc, _, x = small
    d = tmp_path / "b"
    acc.save(d, x_float=x[:4])
    before = {f.name: f.read_bytes() for f in d.iterdir() if f.is_file()}

    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(ir, "save_graph", boom)
    with pytest.raises(KeyboardInterrupt):
        acc.save(d, x_float=x[:2])
    assert {f.name: f.read_bytes() for f in d.iterdir() if f.is_file()} == before
    assert not list(tmp_path.glob(".b.*"))


def test_readers_refuse_changed_or_incomplete_dirs(small, tmp_path):
    _, acc, _, x = small
    d = tmp_path / "b"
    acc.save(d, x_float=x[:4])
    (d / "accelerator.v").write_text((d / "accelerator.v").read_text() + "\n// edited\n")
    with pytest.raises(builddir.BuildDirError, match="accelerator.v changed after the manifest"):
        builddir.open_build_dir(d)
    (d / "inputs.npy").unlink()
    with pytest.raises(builddir.BuildDirError, match="incomplete: missing inputs.npy"):
        builddir.open_build_dir(d, vectors=True)


def test_top_name_is_an_identifier(small, tmp_path):
    _, acc, _, _ = small
    for bad in ("a b", "x;rm -rf", "1top", ""):
        with pytest.raises(BadInput, match="not a plain identifier"):
            acc.save(tmp_path / "t", name=bad)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.one_of(st.binary(max_size=200), st.text(max_size=200),
                      st.dictionaries(st.sampled_from(["top", "ports", "schema_version", "files", "vectors",
                                                       "ii_estimate"]),
                                      st.one_of(st.none(), st.integers(), st.text(max_size=20),
                                                st.lists(st.integers(), max_size=3),
                                                st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)),
                                      max_size=6)))
def test_readers_only_ever_raise_qloom_errors_on_junk(tmp_path_factory, junk):
    d = tmp_path_factory.mktemp("junk")
    (d / "accelerator.v").write_text("module x; endmodule\n")
    data = junk if isinstance(junk, bytes) else (json.dumps(junk) if isinstance(junk, dict) else junk).encode()
    (d / "manifest.json").write_bytes(data)
    with pytest.raises(QloomError):
        builddir.open_build_dir(d)


def test_load_and_predict_without_the_model(small):
    d, acc, _, x = small
    back = qloom.Accelerator.load(d)
    assert back.graph.hash() == acc.graph.hash() and back.folding == acc.folding
    assert (back.quantize_input(x[:16]) == acc.quantize_input(x[:16])).all()
    assert np.array_equal(back.predict(x[:16]), acc.predict(x[:16]))
    with pytest.raises(QloomError, match="without its source model"):
        back.fidelity(x[:4])
