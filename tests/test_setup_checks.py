"""The AlphaEdit setup's shortcuts give what the plain computations give: the tiled exact
symmetry test, the finite-sum screen, the half-flop Gram product, the skipped symmetrising copy,
an eigenvalue at the threshold, and bench/setup.py on a small case."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from oteseq.errors import NonFiniteError, NotPSDError
from oteseq.memory._inputs import check_second_moment
from oteseq.ols import nullspace_projector
from oteseq.ols._checks import check_finite, check_symmetric, is_symmetric
from oteseq.ols.projection import gram

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]


def symmetric(d: int, seed: int) -> torch.Tensor:
    A = torch.randn(d, d, dtype=F64, generator=torch.Generator().manual_seed(seed))
    return A + A.T


@settings(max_examples=40, deadline=None)
@given(d=st.integers(0, 40), r=st.integers(0, 9), block=st.integers(1, 16),
       seed=st.integers(0, 10_000))
def test_gram_equals_the_product_and_is_exactly_symmetric(d, r, block, seed):
    """Every block row, the mirrored upper triangle and the averaged diagonal blocks."""
    V = torch.randn(d, r, dtype=F64, generator=torch.Generator().manual_seed(seed))
    G = gram(V, block)
    assert torch.equal(G, G.T)
    assert G.shape == (d, d)
    if d:
        assert float((G - V @ V.T).abs().max()) <= 1e-12 * max(1.0, r)


@settings(max_examples=40, deadline=None)
@given(d=st.integers(2, 40), block=st.integers(1, 16), data=st.data(),
       seed=st.integers(0, 10_000))
def test_is_symmetric_finds_one_asymmetric_entry_in_any_tile(d, block, data, seed):
    C = symmetric(d, seed)
    assert is_symmetric(C, block)
    i = data.draw(st.integers(0, d - 1))
    j = data.draw(st.integers(0, d - 1).filter(lambda j: j != i))
    C[i, j] = torch.nextafter(C[i, j], torch.tensor(float("inf"), dtype=F64))
    assert not is_symmetric(C, block)


def test_is_symmetric_rejects_non_square_and_nan():
    assert not is_symmetric(torch.zeros(2, 3, dtype=F64))
    assert not is_symmetric(torch.zeros(4, dtype=F64))
    assert not is_symmetric(torch.full((2, 2), float("nan"), dtype=F64))
    assert is_symmetric(torch.zeros(0, 0, dtype=F64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_check_finite_is_exact_when_the_sum_overflows(dtype):
    """Finite entries whose sum overflows pass (the entrywise test decides); one NaN or ±inf
    anywhere, or +inf and −inf together (a NaN sum), raises."""
    big = torch.finfo(dtype).max
    x = torch.full((7,), big, dtype=dtype)
    assert not bool(torch.isfinite(x.sum()))
    check_finite(x, "x")
    for bad in ([float("nan")], [float("inf")], [float("-inf")], [float("inf"), float("-inf")]):
        for at in (0, 3, 5):
            y = torch.ones(7, dtype=dtype)
            y[at:at + len(bad)] = torch.tensor(bad, dtype=dtype)
            with pytest.raises(NonFiniteError):
                check_finite(y, "y")


def test_an_exactly_symmetric_c0_skips_the_copy_and_a_nudged_one_is_averaged():
    """check_symmetric returns 0.0 only for C0 = C0ᵀ bit for bit; a C0 asymmetric within the
    tolerance gives the projector of (C0 + C0ᵀ) / 2, bit for bit."""
    C0 = symmetric(20, 1) / 40 + 0.05 * torch.eye(20, dtype=F64)
    assert check_symmetric(C0, "C0", F64) == 0.0
    nudged = C0.clone()
    nudged[3, 11] += 1e-12
    assert check_symmetric(nudged, "C0", F64) > 0.0
    P, rank = nullspace_projector(nudged, 2e-2)
    P_avg, rank_avg = nullspace_projector((nudged + nudged.T) / 2, 2e-2)
    assert torch.equal(P, P_avg) and rank == rank_avg


def test_the_second_moment_check_copies_and_still_screens():
    """A float64 C0 comes back as a copy (the caller's tensor is never aliased); a negative
    diagonal entry, or |C_ij| above √(C_ii C_jj), is rejected."""
    K = torch.randn(6, 30, dtype=F64, generator=torch.Generator().manual_seed(2))
    C0 = K @ K.T / 30
    C = check_second_moment(C0, 6, torch.device("cpu"))
    assert C is not C0 and torch.equal(C, C0)
    C[0, 0] = -1.0
    assert float(C0[0, 0]) > 0.0
    for i, j, value in ((2, 2, -0.1), (1, 4, 1.01 * float((C0[1, 1] * C0[4, 4]).sqrt()))):
        bad = C0.clone()
        bad[i, j] = bad[j, i] = value
        with pytest.raises(NotPSDError):
            check_second_moment(bad, 6, torch.device("cpu"))


@pytest.mark.parametrize("ulps", [-2, 0, 2])
def test_an_eigenvalue_at_the_threshold_falls_on_one_side_consistently(ulps):
    """An eigenvalue within eigh's error (≈ eps·‖C0‖) of the threshold may be counted on either
    side; whichever side eigh reports, P is the exact projector of that rank, and recomputing
    gives the same bits."""
    d, threshold = 24, 2e-2
    Q, _ = torch.linalg.qr(torch.randn(d, d, dtype=F64, generator=torch.Generator().manual_seed(3)))
    spectrum = torch.logspace(-4, 2, d, dtype=F64)
    spectrum[(spectrum / threshold - 1).abs() < 0.3] = 0.1
    value = torch.tensor(threshold, dtype=F64)
    for _ in range(abs(ulps)):
        value = torch.nextafter(value, torch.tensor(ulps * float("inf"), dtype=F64))
    spectrum[d // 2] = value
    C0 = (Q * spectrum) @ Q.T
    C0 = (C0 + C0.T) / 2
    P, rank = nullspace_projector(C0, threshold)
    below = int((spectrum < threshold * (1 - 1e-9)).sum())
    assert rank in (below, below + 1)
    assert float((P @ P - P).abs().max()) <= 1e-12
    assert abs(float(P.trace()) - rank) <= 1e-10
    again, rank_again = nullspace_projector(C0.clone(), threshold)
    assert torch.equal(P, again) and rank_again == rank


def test_bench_setup_on_a_small_case(monkeypatch, capsys):
    """bench/setup.py runs end to end: both ranks, wall and CPU seconds, the load average."""
    spec = importlib.util.spec_from_file_location("bench_setup", ROOT / "bench" / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["setup.py", "--d", "24", "--layers", "2"])
    threads = torch.get_num_threads()
    try:
        module.main()
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert out.count("rank(P) oteseq 9, reference 9;") == 2
    assert out.count("s CPU") == 3 and "load average at the start" in out
