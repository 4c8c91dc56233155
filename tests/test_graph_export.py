"""Graph-shaped IR (Add, Concat) through write_qonnx: qonnx's executor gives reference.run's outputs."""
import pytest

pytest.importorskip("qonnx")

from graphs import inception, residual  # noqa: E402
from test_qonnx_export import check_roundtrip  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.mark.parametrize("make", [lambda: residual(coeffs=(2, -1)), lambda: residual(shortcut=True), inception])
def test_dag_roundtrip(make, tmp_path):
    proto = check_roundtrip(make(), tmp_path, n=40, n_exact=2)
    ops = {n.op_type for n in proto.graph.node}
    assert ops & {"Add", "Concat"}
