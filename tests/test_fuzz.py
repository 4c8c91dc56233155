# amaranth: UnusedElaboratable=no
"""The fast slice of the differential fuzzer (tests/fuzznets.py; long runs: bench/fuzz.py).

Random qloom.nn networks through the public API only: torch eval = IR on every element of random
and adversarial inputs; a few on Verilator with random stalls (every element), and without stalls
II measured == estimated exactly and latency within the documented bound."""
import collections

import pytest
import torch

import fuzznets as fz

REF_SEEDS = range(1000, 1040)
RTL_SEEDS = [2001, 2002, 2004]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_reference_slice():
    outcomes = collections.Counter()
    for seed in REF_SEEDS:
        outcome, _ = fz.check_case(fz.random_case(seed))
        assert not outcome.startswith("FAIL"), f"seed {seed}: {outcome}"
        outcomes[outcome] += 1
    assert outcomes["ok"] >= len(REF_SEEDS) * 3 // 4, outcomes      # refusals stay the exception


@pytest.fixture(scope="module")
def sim_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz_sim")


@pytest.mark.parametrize("seed", RTL_SEEDS)
def test_rtl_slice(seed, sim_cache):
    from qloom.sim import available
    if not available("verilator")[0]:
        pytest.skip("Verilator not available")
    case = fz.random_case(seed)
    outcome, acc = fz.check_case(case)
    assert outcome == "ok", outcome
    assert fz.check_rtl(case, acc, stall_prob=0.5, cache_dir=sim_cache) == "ok"
