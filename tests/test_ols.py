"""Closed forms of oteseq.ols against the obvious dense computation on random float64 problems."""
from __future__ import annotations

import functools
import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from oteseq import ols
from oteseq.errors import (DeviceDtypeError, NonFiniteError, NotPSDError, ShapeError,
                           SingularSystemError)

F64 = torch.float64
FAST = settings(max_examples=25, deadline=None)


# ---------------------------------------------------------------- helpers

def randn(g: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=g, dtype=F64)


def second_moment(g: torch.Generator, d: int, rank: int, n0: int = 50) -> torch.Tensor:
    """C0 = K0 K0ᵀ / N with K0 confined to a random rank-``rank`` subspace."""
    basis = torch.linalg.qr(randn(g, d, d))[0][:, :rank]
    K0 = basis @ randn(g, rank, n0)
    return K0 @ K0.T / n0


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / max(float(torch.linalg.norm(b)), 1e-300))


def memit_delta(W, C0, K, V, lam, K_p=None):
    """The obvious MEMIT(-seq) step: R Kᵀ (lam C0 + K_p K_pᵀ + K Kᵀ)⁻¹ via linalg.solve."""
    A = lam * C0 + K @ K.T + (0 if K_p is None else K_p @ K_p.T)
    return torch.linalg.solve(A, ((V - W @ K) @ K.T).T).T


def ote_dense(W0, C0, K, V, lam):
    """OTE from its normal equations W A = lam W0 C0 + V Kᵀ."""
    A = lam * C0 + K @ K.T
    return torch.linalg.solve(A, (lam * W0 @ C0 + V @ K.T).T).T


def splits(n: int):
    """Every way to cut n edits into consecutive non-empty batches (2^(n−1) of them)."""
    for cuts in itertools.product([False, True], repeat=n - 1):
        bounds = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [n]
        yield list(zip(bounds[:-1], bounds[1:]))


@st.composite
def editing_problems(draw):
    """Shapes and ranks: d_in 2..12, d_out 1..6, 1..5 batches of 1..5 keys, C0 of any rank that
    keeps the first system solvable with lam > 0 (rank(C0) + n_1 ≥ d_in)."""
    d_in = draw(st.integers(2, 12))
    d_out = draw(st.integers(1, 6))
    sizes = draw(st.lists(st.integers(1, 5), min_size=1, max_size=5))
    rank = draw(st.integers(max(0, d_in - sizes[0]), d_in))
    lam = draw(st.floats(0.1, 10.0))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    W0, C0 = randn(g, d_out, d_in), second_moment(g, d_in, rank)
    batches = [(randn(g, d_in, n), randn(g, d_out, n)) for n in sizes]
    return W0, C0, batches, lam


# ---------------------------------------------------------------- solve_spd

def test_solve_spd_right_and_left_match_dense_solve():
    g = torch.Generator().manual_seed(0)
    M = randn(g, 7, 7)
    A = M @ M.T + 0.1 * torch.eye(7, dtype=F64)
    B_right, B_left = randn(g, 3, 7), randn(g, 7, 4)
    assert rel(ols.solve_spd(A, B_right), torch.linalg.solve(A.T, B_right.T).T) < 1e-12
    assert rel(ols.solve_spd(A, B_left, side="left"), torch.linalg.solve(A, B_left)) < 1e-12


def test_solve_spd_computes_in_float64_and_returns_b_dtype():
    g = torch.Generator().manual_seed(1)
    M = randn(g, 6, 6)
    A = M @ M.T + 1e-3 * torch.eye(6, dtype=F64)
    B = randn(g, 2, 6)
    X32 = ols.solve_spd(A.float(), B.float())
    assert X32.dtype == torch.float32
    # float64 inside: error of order float32 rounding of the inputs, not of a float32 solve
    assert rel(X32.double(), ols.solve_spd(A.float().double(), B.float().double())) < 1e-6


def test_solve_spd_names_singular_and_indefinite_systems():
    g = torch.Generator().manual_seed(2)
    K = randn(g, 5, 2)
    B = randn(g, 1, 5)
    with pytest.raises(SingularSystemError, match="lam"):
        ols.solve_spd(K @ K.T, B)
    with pytest.raises(NotPSDError, match="positive semi-definite"):
        ols.solve_spd(-(K @ K.T) - torch.eye(5, dtype=F64), B)
    with pytest.raises(ValueError, match="side"):
        ols.solve_spd(torch.eye(5, dtype=F64), B, side="middle")


# ---------------------------------------------------------------- OTE and SE

def test_ote_matches_normal_equations_and_accepts_batches():
    g = torch.Generator().manual_seed(3)
    W0, C0 = randn(g, 4, 9), second_moment(g, 9, 6)
    K, V = randn(g, 9, 5), randn(g, 4, 5)
    W = ols.ote(W0, C0, K, V, 2.0)
    assert rel(W, ote_dense(W0, C0, K, V, 2.0)) < 1e-12
    assert rel(ols.ote(W0, C0, [K[:, :2], K[:, 2:]], [V[:, :2], V[:, 2:]], 2.0), W) < 1e-14


@FAST
@given(editing_problems())
def test_aligned_se_equals_ote_after_every_step(problem):
    W0, C0, batches, lam = problem
    history = ols.se(W0, C0, batches, lam, aligned=True)
    assert len(history) == len(batches) + 1 and history[0] is W0
    for t in range(1, len(batches) + 1):
        K = torch.cat([k for k, _ in batches[:t]], dim=1)
        V = torch.cat([v for _, v in batches[:t]], dim=1)
        assert rel(history[t], ote_dense(W0, C0, K, V, lam)) < 1e-9


def test_aligned_se_equals_ote_for_every_split_of_the_same_edits():
    g = torch.Generator().manual_seed(4)
    W0, C0 = randn(g, 3, 8), second_moment(g, 8, 7)  # rank 7 + one key: solvable
    K, V = randn(g, 8, 6), randn(g, 3, 6)
    lam = 0.5
    W_ote = ols.ote(W0, C0, K, V, lam)
    count = 0
    for split in splits(6):
        batches = [(K[:, a:b], V[:, a:b]) for a, b in split]
        assert rel(ols.se(W0, C0, batches, lam)[-1], W_ote) < 1e-10
        count += 1
    assert count == 32


@FAST
@given(editing_problems())
def test_se_step_is_the_memit_seq_formula(problem):
    W0, C0, batches, lam = problem
    K_p = torch.cat([k for k, _ in batches[:-1]], dim=1) if len(batches) > 1 else None
    # the first batch joins the step's keys so that lam C0 + K Kᵀ + ... is invertible
    K = torch.cat([batches[-1][0], batches[0][0]], dim=1)
    V = torch.cat([batches[-1][1], batches[0][1]], dim=1)
    assert rel(ols.se_step(W0, C0, K, V, lam, K_p), memit_delta(W0, C0, K, V, lam, K_p)) < 1e-9


def test_misaligned_se_differs_from_ote_with_two_batches():
    g = torch.Generator().manual_seed(5)
    W0, C0 = randn(g, 4, 8), second_moment(g, 8, 8)
    batches = [(randn(g, 8, 3), randn(g, 4, 3)) for _ in range(2)]
    one = ols.se(W0, C0, batches[:1], 1.0, aligned=False)[-1]
    two = ols.se(W0, C0, batches, 1.0, aligned=False)[-1]
    K = torch.cat([k for k, _ in batches], dim=1)
    V = torch.cat([v for _, v in batches], dim=1)
    assert rel(one, ols.ote(W0, C0, batches[0][0], batches[0][1], 1.0)) < 1e-12
    assert rel(two, ols.ote(W0, C0, K, V, 1.0)) > 1e-2
    # it forgets: the first batch is fitted worse than by OTE
    K1, V1 = batches[0]
    assert torch.linalg.norm(two @ K1 - V1) > torch.linalg.norm(ols.ote(W0, C0, K, V, 1.0) @ K1 - V1)


def drift(history, W0, K0):
    return torch.tensor([float(torch.linalg.norm((W - W0) @ K0)) for W in history])


def test_misaligned_drift_on_preserved_keys_grows_with_steps():
    steps, seeds = 16, 12
    mis, ali = torch.zeros(steps + 1), torch.zeros(steps + 1)
    for seed in range(seeds):
        g = torch.Generator().manual_seed(100 + seed)
        d_in, d_out = 12, 6
        K0 = randn(g, d_in, 200)
        C0 = K0 @ K0.T / 200
        W0 = randn(g, d_out, d_in)
        batches = [(randn(g, d_in, 4), randn(g, d_out, 4, scale=3.0)) for _ in range(steps)]
        mis += drift(ols.se(W0, C0, batches, 1.0, aligned=False), W0, K0) / seeds
        ali += drift(ols.se(W0, C0, batches, 1.0, aligned=True), W0, K0) / seeds
    checkpoints = [1, 2, 4, 8, 16]
    assert all(mis[a] < mis[b] for a, b in zip(checkpoints, checkpoints[1:])), mis
    assert mis[16] > 1.5 * mis[1]
    assert mis[16] > 1.2 * ali[16], (mis[16], ali[16])


# ---------------------------------------------------------------- ridge and AlphaEdit

def projector(g: torch.Generator, d: int, rank: int) -> torch.Tensor:
    U = torch.linalg.qr(randn(g, d, d))[0][:, :rank]
    return U @ U.T


def alphaedit_literal(W, K, V, P, alpha, K_p=None, C0=None, lam=0.0):
    """Δ = R Kᵀ P ((K Kᵀ + K_p K_pᵀ + lam C0) P + alpha I)⁻¹, non-symmetric, by linalg.solve."""
    d = W.shape[1]
    M = K @ K.T + (0 if K_p is None else K_p @ K_p.T) + (0 if C0 is None else lam * C0)
    S = M @ P + alpha * torch.eye(d, dtype=F64)
    return torch.linalg.solve(S.T, ((V - W @ K) @ K.T @ P).T).T


@FAST
@given(d_in=st.integers(2, 12), d_out=st.integers(1, 6), n=st.integers(1, 5),
       m=st.integers(0, 8), rank_p=st.integers(0, 12), seed=st.integers(0, 2**31 - 1))
def test_alphaedit_symmetric_form_equals_literal_and_ridge_on_projected_keys(
        d_in, d_out, n, m, rank_p, seed):
    g = torch.Generator().manual_seed(seed)
    P = projector(g, d_in, min(rank_p, d_in))
    W, K, V = randn(g, d_out, d_in), randn(g, d_in, n), randn(g, d_out, n)
    K_p = randn(g, d_in, m) if m else None
    alpha = 0.7
    delta = ols.alphaedit_step(W, K, V, P, alpha, K_p=K_p)
    assert rel(delta, alphaedit_literal(W, K, V, P, alpha, K_p)) < 1e-10
    R = V - W @ K
    PK_p = None if K_p is None else P @ K_p
    assert rel(delta, ols.ridge(torch.zeros_like(W), P @ K, R, alpha, K_p=PK_p)) < 1e-10
    assert float(torch.linalg.norm(delta @ P - delta)) <= 1e-10 * (1 + float(torch.linalg.norm(delta)))


def test_alphaedit_with_lam_c0_matches_literal():
    g = torch.Generator().manual_seed(6)
    P, C0 = projector(g, 9, 5), second_moment(g, 9, 9)
    W, K, V, K_p = randn(g, 3, 9), randn(g, 9, 2), randn(g, 3, 2), randn(g, 9, 4)
    delta = ols.alphaedit_step(W, K, V, P, 0.3, K_p=K_p, C0=C0, lam=2.0)
    assert rel(delta, alphaedit_literal(W, K, V, P, 0.3, K_p, C0, 2.0)) < 1e-10


def test_alphaedit_with_identity_no_ridge_is_the_aligned_se_step():
    g = torch.Generator().manual_seed(7)
    C0 = second_moment(g, 8, 5)
    W, K, V, K_p = randn(g, 4, 8), randn(g, 8, 3), randn(g, 4, 3), randn(g, 8, 6)
    eye = torch.eye(8, dtype=F64)
    delta = ols.alphaedit_step(W, K, V, eye, 0.0, K_p=K_p, C0=C0, lam=3.0)
    assert rel(delta, ols.se_step(W, C0, K, V, 3.0, K_p)) < 1e-12


def test_ridge_matches_dense_formula():
    g = torch.Generator().manual_seed(8)
    W, K, V, K_p = randn(g, 4, 7), randn(g, 7, 3), randn(g, 4, 3), randn(g, 7, 2)
    A = K @ K.T + K_p @ K_p.T + 0.5 * torch.eye(7, dtype=F64)
    expected = torch.linalg.solve(A, ((V - W @ K) @ K.T).T).T
    assert rel(ols.ridge(W, K, V, 0.5, K_p=K_p), expected) < 1e-12


def test_alphaedit_aligned_se_equals_its_ote():
    g = torch.Generator().manual_seed(9)
    P = projector(g, 10, 6)
    W0 = randn(g, 3, 10)
    batches = [(randn(g, 10, n), randn(g, 3, n)) for n in (2, 3, 1, 4)]
    W, earlier = W0, []
    for K, V in batches:
        K_p = torch.cat(earlier, dim=1) if earlier else None
        W = W + ols.alphaedit_step(W, K, V, P, 2.0, K_p=K_p)
        earlier.append(K)
    K_all = torch.cat([k for k, _ in batches], dim=1)
    V_all = torch.cat([v for _, v in batches], dim=1)
    eye = torch.eye(10, dtype=F64)
    assert rel(W, ols.reparam_ote(W0, K_all, V_all, P, 2.0 * eye)) < 1e-10
