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
from oteseq.errors import (DeviceDtypeError, NonFiniteError, NotPSDError, OptionError,
                           ShapeError, SingularSystemError)

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


def tolerance(A: torch.Tensor) -> float:
    """1e-10 relative, loosened for ill-conditioned draws: two correct float64 solves of the
    same system differ by up to ~cond(A)·eps (rank-deficient C0 with just enough keys)."""
    return max(1e-10, 1e-13 * float(torch.linalg.cond(A)))


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
    with pytest.raises(OptionError, match="side"):
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
        assert rel(history[t], ote_dense(W0, C0, K, V, lam)) < tolerance(lam * C0 + K @ K.T)


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
    A = lam * C0 + K @ K.T + (0 if K_p is None else K_p @ K_p.T)
    expected = memit_delta(W0, C0, K, V, lam, K_p)
    assert rel(ols.se_step(W0, C0, K, V, lam, K_p), expected) < tolerance(A)


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
    W_ote = ols.ote(W0, C0, K, V, 1.0)
    assert torch.linalg.norm(two @ K1 - V1) > torch.linalg.norm(W_ote @ K1 - V1)


def drift(history, W0, K0):
    return torch.tensor([float(torch.linalg.norm((W - W0) @ K0)) for W in history])


def ote_objective(W, W0, C0, K, V, lam):
    return float(torch.linalg.norm(W @ K - V) ** 2 + lam * torch.trace((W - W0) @ C0 @ (W - W0).T))


def test_misaligned_drift_on_preserved_keys_grows_with_steps():
    """Edits are perturbations of W0's outputs; lam C0 dominates each step (as lam = 15000 does
    in MEMIT). Plain MEMIT batch after batch walks away from W0 on the preserved keys K0."""
    steps, seeds, d_in, d_out, lam = 16, 12, 24, 6, 10.0
    mean_drift = torch.zeros(steps + 1)
    for seed in range(seeds):
        g = torch.Generator().manual_seed(100 + seed)
        K0 = randn(g, d_in, 200)
        C0, W0 = K0 @ K0.T / 200, randn(g, d_out, d_in)
        keys = [randn(g, d_in, 2) for _ in range(steps)]
        batches = [(K, W0 @ K + randn(g, d_out, 2)) for K in keys]
        misaligned = ols.se(W0, C0, batches, lam, aligned=False)
        mean_drift += drift(misaligned, W0, K0) / seeds
        # OTE (= aligned SE) is the best point of the joint objective; misaligned SE is not
        K, V = torch.cat(keys, dim=1), torch.cat([v for _, v in batches], dim=1)
        aligned = ols.se(W0, C0, batches, lam, aligned=True)
        assert (ote_objective(misaligned[-1], W0, C0, K, V, lam)
                > 1.2 * ote_objective(aligned[-1], W0, C0, K, V, lam))
    checkpoints = [1, 2, 4, 8, 16]
    assert all(mean_drift[a] < mean_drift[b] for a, b in zip(checkpoints, checkpoints[1:])), \
        mean_drift
    assert mean_drift[16] > 2.0 * mean_drift[1], mean_drift


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
    assert rel(delta @ P, delta) < 1e-10 or float(torch.linalg.norm(delta)) < 1e-12


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


# ---------------------------------------------------------------- null-space projector

def spectrum_matrix(g: torch.Generator, eigenvalues: list[float]) -> torch.Tensor:
    Q = torch.linalg.qr(randn(g, len(eigenvalues), len(eigenvalues)))[0]
    return Q @ torch.diag(torch.tensor(eigenvalues, dtype=F64)) @ Q.T


@pytest.mark.parametrize("mode, threshold, rank", [
    ("absolute", 2e-2, 3),   # 0, 1e-3, 1e-2 < 2e-2
    ("relative", 1e-2, 3),   # λ < 0.01 · 10
    ("energy", 5e-2, 4),     # 0 + 1e-3 + 1e-2 + 0.5 ≤ 0.05 · 12.511
])
def test_nullspace_projector_keeps_the_small_directions(mode, threshold, rank):
    g = torch.Generator().manual_seed(10)
    C0 = spectrum_matrix(g, [0.0, 1e-3, 1e-2, 0.5, 2.0, 10.0])
    P, r = ols.nullspace_projector(C0, threshold, mode=mode)
    assert r == rank
    assert torch.allclose(P, P.T, atol=1e-14)
    assert torch.allclose(P @ P, P, atol=1e-12)
    assert abs(float(torch.trace(P)) - rank) < 1e-10
    kept_max = [0.0, 1e-3, 1e-2, 0.5][rank - 1]
    assert float(torch.linalg.matrix_norm(C0 @ P, ord=2)) <= kept_max + 1e-12
    # the dropped directions are untouched by I − P: C0 (I − P) keeps the large eigenvalues
    assert float(torch.linalg.matrix_norm(C0 @ (torch.eye(6, dtype=F64) - P), ord=2)) > 9.99


def test_nullspace_projector_relative_mode_is_scale_free_absolute_is_not():
    g = torch.Generator().manual_seed(11)
    C0 = spectrum_matrix(g, [0.0, 1e-3, 1e-2, 0.5, 2.0, 10.0])
    assert ols.nullspace_projector(1e3 * C0, 1e-2, mode="relative")[1] == 3
    assert ols.nullspace_projector(1e3 * C0, 2e-2)[1] == 1
    P32, r32 = ols.nullspace_projector(C0.float())
    assert P32.dtype == torch.float32 and r32 == 3
    with pytest.raises(OptionError, match="mode"):
        ols.nullspace_projector(C0, mode="fraction")


def test_nullspace_projector_rank_deficient_second_moment():
    g = torch.Generator().manual_seed(12)
    C0 = second_moment(g, 10, 4)
    P, r = ols.nullspace_projector(C0, 1e-9)
    assert r == 6
    assert float(torch.linalg.norm(C0 @ P)) < 1e-10


# ---------------------------------------------------------------- the broader class

def members(g: torch.Generator, d: int):
    """B ∈ {I, P, neuron mask, a random singular B} × G ∈ {lam C0, alpha I, sum}."""
    C0 = second_moment(g, d, d - 3)
    eye = torch.eye(d, dtype=F64)
    Bs = {"I": eye, "P": projector(g, d, 6), "mask": ols.neuron_mask([0, 2, 3, 7, 8], d),
          "low-rank": randn(g, d, 5) @ randn(g, 5, d)}
    Gs = {"lam C0": 4.0 * C0, "alpha I": 0.5 * eye, "sum": 4.0 * C0 + 0.5 * eye}
    return [(b, gname, B, G) for b, B in Bs.items() for gname, G in Gs.items()]


def test_reparam_se_with_past_keys_equals_its_ote_for_every_member():
    g = torch.Generator().manual_seed(13)
    d, d_out = 10, 3
    W0 = randn(g, d_out, d)
    batches = [(randn(g, d, n), randn(g, d_out, n)) for n in (3, 1, 2, 2)]  # rank C0 + 3 = d
    K_all = torch.cat([k for k, _ in batches], dim=1)
    V_all = torch.cat([v for _, v in batches], dim=1)
    for bname, gname, B, G in members(g, d):
        W, earlier = W0, []
        for K, V in batches:
            K_p = torch.cat(earlier, dim=1) if earlier else None
            W = W + ols.reparam_step(W, K, V, B, G, K_p=K_p) @ B
            earlier.append(K)
        assert rel(W, ols.reparam_ote(W0, K_all, V_all, B, G)) < 1e-9, (bname, gname)


@FAST
@given(editing_problems(), st.sampled_from(["P", "mask"]), st.integers(0, 12))
def test_reparam_se_equals_ote_over_shapes(problem, kind, rank_b):
    W0, C0, batches, lam = problem
    d = W0.shape[1]
    g = torch.Generator().manual_seed(rank_b)
    B = projector(g, d, min(rank_b, d)) if kind == "P" else ols.neuron_mask(range(0, d, 2), d)
    G = lam * C0 + 0.1 * torch.eye(d, dtype=F64)
    W, earlier = W0, []
    for K, V in batches:
        K_p = torch.cat(earlier, dim=1) if earlier else None
        W = W + ols.reparam_step(W, K, V, B, G, K_p=K_p) @ B
        earlier.append(K)
    K_all = torch.cat(earlier, dim=1)
    V_all = torch.cat([v for _, v in batches], dim=1)
    assert rel(W, ols.reparam_ote(W0, K_all, V_all, B, G)) < tolerance(G + K_all @ K_all.T)


def test_reparam_members_reduce_to_memit_alphaedit_and_nse():
    g = torch.Generator().manual_seed(14)
    d, d_out = 9, 4
    C0 = second_moment(g, d, d)
    W, K, V, K_p = randn(g, d_out, d), randn(g, d, 3), randn(g, d_out, 3), randn(g, d, 4)
    eye = torch.eye(d, dtype=F64)
    memit = ols.reparam_step(W, K, V, eye, 2.0 * C0, K_p=K_p)
    assert rel(memit, ols.se_step(W, C0, K, V, 2.0, K_p)) < 1e-12
    P = projector(g, d, 5)
    assert rel(ols.reparam_step(W, K, V, P, 0.3 * eye, K_p=K_p),
               ols.alphaedit_step(W, K, V, P, 0.3, K_p=K_p)) < 1e-10
    # NSE: MEMIT-seq restricted to the selected key neurons S (columns of W)
    S = [1, 4, 5, 8]
    A = 2.0 * C0 + K @ K.T + K_p @ K_p.T
    rows = torch.linalg.solve(A[S][:, S], ((V - W @ K) @ K[S].T).T).T
    expected = torch.zeros_like(W)
    expected[:, S] = rows
    nse = ols.reparam_step(W, K, V, ols.neuron_mask(S, d), 2.0 * C0, K_p=K_p)
    assert rel(nse, expected) < 1e-12


def test_reparam_general_b_returns_min_norm_delta_of_the_normal_equations():
    g = torch.Generator().manual_seed(15)
    d, d_out = 8, 3
    B = randn(g, d, 5) @ randn(g, 5, d)
    W, K, V = randn(g, d_out, d), randn(g, d, 3), randn(g, d_out, 3)
    G = 0.7 * torch.eye(d, dtype=F64)
    delta = ols.reparam_step(W, K, V, B, G)
    M = K @ K.T + G
    expected = ((V - W @ K) @ K.T @ B.T) @ torch.linalg.pinv(B @ M @ B.T)
    assert rel(delta, expected) < 1e-8
    assert rel(delta @ B @ M @ B.T, (V - W @ K) @ K.T @ B.T) < 1e-10


def test_neuron_mask_and_its_errors():
    B = ols.neuron_mask([3, 1], 5)
    assert torch.equal(B.diagonal(), torch.tensor([0, 1, 0, 1, 0], dtype=F64))
    assert float(B.sum()) == 2
    with pytest.raises(ShapeError, match=r"\[0, 5\)"):
        ols.neuron_mask([5], 5)


# ---------------------------------------------------------------- equality-constrained limit

def test_equality_constrained_fits_exactly_and_matches_formula():
    g = torch.Generator().manual_seed(16)
    C = second_moment(g, 10, 10)
    W, K, V = randn(g, 4, 10), randn(g, 10, 4), randn(g, 4, 4)
    delta = ols.equality_constrained(W, C, K, V)
    assert rel((W + delta) @ K, V) < 1e-10
    Cinv_K = torch.linalg.solve(C, K)
    expected = (V - W @ K) @ torch.linalg.solve(K.T @ Cinv_K, Cinv_K.T)
    assert rel(delta, expected) < 1e-10
    ridged = ols.equality_constrained(W, C, K, V, ridge=0.1)
    expected = (V - W @ K) @ torch.linalg.solve(K.T @ Cinv_K + 0.1 * torch.eye(4, dtype=F64),
                                                Cinv_K.T)
    assert rel(ridged, expected) < 1e-10


def test_memit_converges_to_the_equality_constrained_update_as_lam_goes_to_zero():
    g = torch.Generator().manual_seed(17)
    C = second_moment(g, 10, 10)
    W, K, V = randn(g, 4, 10), randn(g, 10, 3), randn(g, 4, 3)
    target = ols.equality_constrained(W, C, K, V)
    gaps = [rel(ols.se_step(W, C, K, V, lam), target) for lam in (1e-1, 1e-3, 1e-5, 1e-7)]
    assert all(a > 10 * b for a, b in zip(gaps, gaps[1:])), gaps  # O(lam)
    assert gaps[-1] < 1e-5


def test_rome_is_the_one_key_equality_constrained_update():
    g = torch.Generator().manual_seed(18)
    C = second_moment(g, 7, 7)
    W, k, v = randn(g, 3, 7), randn(g, 7), randn(g, 3)
    delta = ols.rome(W, C, k, v)
    assert rel(delta, ols.equality_constrained(W, C, k[:, None], v[:, None])) < 1e-12
    assert torch.linalg.matrix_rank(delta) == 1
    assert rel((W + delta) @ k, v) < 1e-12
    plain = ols.rome(W, None, k, v)
    assert rel(plain, ols.equality_constrained(W, torch.eye(7, dtype=F64), k[:, None],
                                               v[:, None])) < 1e-12
    with pytest.raises(ShapeError, match="one fact"):
        ols.rome(W, C, randn(g, 7, 2), randn(g, 3, 2))
    with pytest.raises(SingularSystemError, match="zero"):
        ols.rome(W, C, torch.zeros(7, dtype=F64), v)


# ---------------------------------------------------------------- PRUNE and RECT

@pytest.mark.parametrize("base", [math.e, 2.0, 1.2])
def test_prune_maps_large_singular_values_and_keeps_the_rest(base):
    g = torch.Generator().manual_seed(19)
    W = randn(g, 6, 9)
    sigma_max = float(torch.linalg.matrix_norm(W, ord=2))
    U = torch.linalg.qr(randn(g, 6, 6))[0]
    Vh = torch.linalg.qr(randn(g, 9, 9))[0][:, :4].T
    sigma = torch.tensor([5.0, 2.0, 0.9, 0.3], dtype=F64) * sigma_max
    delta = U[:, :4] @ torch.diag(sigma) @ Vh   # rank 4
    pruned = ols.prune(delta, W, base=base)
    mapped = torch.where(sigma > sigma_max,
                         torch.log(sigma / sigma_max) / math.log(base) + sigma_max, sigma)
    assert torch.allclose(torch.linalg.svdvals(pruned)[:4], mapped.sort(descending=True).values,
                          rtol=1e-12)
    assert int(torch.linalg.matrix_rank(pruned)) == 4
    # same singular vectors: the compressed update is U diag(mapped) Vh
    assert rel(pruned, U[:, :4] @ torch.diag(mapped) @ Vh) < 1e-12
    if sigma_max >= 1 / math.log(base):
        assert bool((torch.linalg.svdvals(pruned)[:4] <= sigma + 1e-12).all())


def test_prune_leaves_small_updates_unchanged():
    g = torch.Generator().manual_seed(20)
    W, delta = randn(g, 5, 8), randn(g, 5, 8)
    delta = 0.99 * delta * float(torch.linalg.matrix_norm(W, ord=2)) / float(
        torch.linalg.matrix_norm(delta, ord=2))
    assert rel(ols.prune(delta, W), delta) < 1e-13
    assert ols.prune(delta.float(), W.float()).dtype == torch.float32


@pytest.mark.parametrize("keep", [0.0, 0.2, 0.4, 0.55, 1.0])
def test_rect_keeps_the_top_fraction_of_relative_changes(keep):
    g = torch.Generator().manual_seed(21)
    W, delta = randn(g, 7, 9), randn(g, 7, 9)
    out = ols.rect(delta, W, keep)
    kept = out != 0
    assert int(kept.sum()) == math.floor(keep * 63 + 0.5)
    assert torch.equal(out[kept], delta[kept])
    scores = (delta / (W + 1e-8)).abs()
    if 0 < int(kept.sum()) < 63:
        assert float(scores[kept].min()) >= float(scores[~kept].max())


def test_rect_breaks_ties_deterministically_in_row_major_order():
    W, delta = torch.ones(3, 4, dtype=F64), torch.ones(3, 4, dtype=F64)
    out = ols.rect(delta, W, keep=0.25)
    assert torch.equal((out != 0).flatten(), torch.arange(12) < 3)
    with pytest.raises(OptionError, match="keep"):
        ols.rect(delta, W, keep=1.5)


# ---------------------------------------------------------------- error feedback

def run_with_operator(W0, C0, lam, batches, op, feedback: bool):
    """Aligned SE with a post-hoc operator, with or without error feedback."""
    W, A, E = W0, lam * C0, None
    for K, V in batches:
        A = A + K @ K.T
        delta_hat, E_new = ols.error_feedback_step(W, A, K, V, E, op)
        W, E = W + delta_hat, (E_new if feedback else None)
    return W, E_new, A


@pytest.mark.parametrize("op", [functools.partial(ols.rect, keep=0.2), ols.prune],
                         ids=["rect", "prune"])
def test_error_feedback_stays_on_the_ote_trajectory_plain_operator_drifts(op):
    steps, ratios = 10, []
    for seed in range(6):
        g = torch.Generator().manual_seed(200 + seed)
        d_in, d_out, lam = 12, 5, 1.0
        W0, C0 = randn(g, d_out, d_in, scale=0.3), second_moment(g, d_in, d_in)
        batches = [(randn(g, d_in, 2), randn(g, d_out, 2, scale=4.0)) for _ in range(steps)]
        K = torch.cat([k for k, _ in batches], dim=1)
        V = torch.cat([v for _, v in batches], dim=1)
        W_ote = ols.ote(W0, C0, K, V, lam)
        W_fb, E_last, A = run_with_operator(W0, C0, lam, batches, op, feedback=True)
        W_plain, _, _ = run_with_operator(W0, C0, lam, batches, op, feedback=False)
        # exact: W_T = W_OTE + (Δ̂_T − Δ_T), the last truncation error E_T A_T⁻¹
        assert rel(W_fb - ols.solve_spd(A, E_last), W_ote) < 1e-9
        ratios.append(rel(W_plain, W_ote) / rel(W_fb, W_ote))
    assert sum(ratios) / len(ratios) > 1.5, ratios


def test_error_feedback_with_identity_operator_is_aligned_se():
    g = torch.Generator().manual_seed(22)
    W0, C0 = randn(g, 3, 8), second_moment(g, 8, 8)
    batches = [(randn(g, 8, 2), randn(g, 3, 2)) for _ in range(3)]
    W, E, _ = run_with_operator(W0, C0, 2.0, batches, lambda d, w: d, feedback=True)
    assert float(E.abs().max()) == 0.0
    assert rel(W, ols.se(W0, C0, batches, 2.0)[-1]) < 1e-12


# ---------------------------------------------------------------- retraction and conflicts

def test_downdate_retracts_edits_exactly():
    g = torch.Generator().manual_seed(23)
    W0, C0, lam = randn(g, 4, 9), second_moment(g, 9, 9), 1.5
    K, V = randn(g, 9, 7), randn(g, 4, 7)
    W = ols.ote(W0, C0, K, V, lam)
    A = lam * C0 + K @ K.T
    removed, kept = [1, 4, 5], [0, 2, 3, 6]
    delta, A_new = ols.downdate_step(W, A, K[:, removed], V[:, removed])
    assert rel(W + delta, ols.ote(W0, C0, K[:, kept], V[:, kept], lam)) < 1e-10
    assert rel(A_new, lam * C0 + K[:, kept] @ K[:, kept].T) < 1e-12
    # retracting everything returns to W0
    delta_all, _ = ols.downdate_step(W, A, K, V)
    assert rel(W + delta_all, W0) < 1e-9


def test_replace_resolves_a_conflict_latest_wins():
    g = torch.Generator().manual_seed(24)
    W0, C0, lam = randn(g, 4, 9), second_moment(g, 9, 9), 0.01
    K, V = randn(g, 9, 5), randn(g, 4, 5)
    v_new = randn(g, 4, 1)
    W = ols.ote(W0, C0, K, V, lam)
    A = lam * C0 + K @ K.T
    # plain accumulation of the contradicting fact (same key, new value) fits neither target
    compromise = ols.se(W0, C0, [(K, V), (K[:, 2:3], v_new)], lam)[-1]
    assert rel(compromise @ K[:, 2:3], (V[:, 2:3] + v_new) / 2) < 1e-2
    delta, A_new = ols.replace_step(W, A, K[:, 2:3], V[:, 2:3], K[:, 2:3], v_new)
    V_fixed = V.clone()
    V_fixed[:, 2:3] = v_new
    assert rel(W + delta, ols.ote(W0, C0, K, V_fixed, lam)) < 1e-10
    assert rel(A_new, A) < 1e-12
    assert rel((W + delta) @ K[:, 2:3], v_new) < 0.1 * rel(compromise @ K[:, 2:3], v_new)
    # a different new key: A changes accordingly
    k_new = randn(g, 9, 1)
    delta, A_new = ols.replace_step(W, A, K[:, :1], V[:, :1], k_new, v_new)
    K_set, V_set = torch.cat([K[:, 1:], k_new], 1), torch.cat([V[:, 1:], v_new], 1)
    assert rel(W + delta, ols.ote(W0, C0, K_set, V_set, lam)) < 1e-9


def test_forgetting_step_is_a_fresh_ote_of_the_batch():
    g = torch.Generator().manual_seed(25)
    W0, C0, lam = randn(g, 3, 8), second_moment(g, 8, 8), 2.0
    W = W0 + randn(g, 3, 8)   # earlier edits
    K, V = randn(g, 8, 3), randn(g, 3, 3)
    assert rel(W + ols.forgetting_step(W, W0, C0, K, V, lam), ols.ote(W0, C0, K, V, lam)) < 1e-12


# ---------------------------------------------------------------- bad input

def small_problem():
    g = torch.Generator().manual_seed(26)
    return randn(g, 3, 6), second_moment(g, 6, 6), randn(g, 6, 2), randn(g, 3, 2)


def test_shape_mismatch_names_the_expected_shape():
    W, C0, K, V = small_problem()
    with pytest.raises(ShapeError, match=r"d_in=6"):
        ols.ote(W, C0, K.T, V, 1.0)
    with pytest.raises(ShapeError, match=r"d_out=3"):
        ols.se_step(W, C0, K, V[:2], 1.0)
    with pytest.raises(ShapeError, match="square"):
        ols.se_step(W, C0[:5], K, V, 1.0)
    with pytest.raises(ShapeError, match="K_p"):
        ols.se_step(W, C0, K, V, 1.0, K_p=torch.ones(5, 2, dtype=F64))
    with pytest.raises(ShapeError, match="same"):
        ols.prune(torch.ones(2, 2, dtype=F64), W)


def test_nan_and_inf_are_rejected():
    W, C0, K, V = small_problem()
    K[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="K contains NaN"):
        ols.ote(W, C0, K, V, 1.0)
    V[1, 1] = float("inf")
    with pytest.raises(NonFiniteError, match="V"):
        ols.ridge(W, torch.ones(6, 2, dtype=F64), V, 1.0)


def test_non_symmetric_c0_and_negative_weights_are_not_psd():
    W, C0, K, V = small_problem()
    C0[0, 1] += 1.0
    with pytest.raises(NotPSDError, match=r"symmetri"):
        ols.ote(W, C0, K, V, 1.0)
    with pytest.raises(NotPSDError, match=r"symmetri"):
        ols.nullspace_projector(C0)
    _, C0, _, _ = small_problem()
    with pytest.raises(NotPSDError, match="lam"):
        ols.ote(W, C0, K, V, -1.0)
    with pytest.raises(NotPSDError, match="alpha"):
        ols.ridge(W, K, V, -0.5)


def test_float32_c0_asymmetric_at_rounding_level_is_accepted():
    W, C0, K, V = small_problem()
    C32 = C0.float()
    C32[0, 1] = C32[0, 1] * (1 + 1e-7)
    assert ols.ote(W.float(), C32, K.float(), V.float(), 1.0).dtype == torch.float32


def test_singular_system_with_lam_zero_and_too_few_keys():
    W, C0, K, V = small_problem()
    with pytest.raises(SingularSystemError, match=r"lam\*C0"):
        ols.ote(W, C0, K, V, 0.0)
    with pytest.raises(SingularSystemError, match="ridge"):
        ols.se_step(W, C0, K, V, 0.0)
    with pytest.raises(SingularSystemError):
        ols.alphaedit_step(W, K, V, ols.nullspace_projector(C0, 0.5)[0], 0.0)


def test_integer_dtype_and_mixed_devices_are_rejected():
    W, C0, K, V = small_problem()
    with pytest.raises(DeviceDtypeError, match=r"K has dtype torch.int64.*\.double\(\)"):
        ols.ote(W, C0, K.long(), V, 1.0)
    with pytest.raises(DeviceDtypeError, match="different devices"):
        ols.ote(W, C0.to("meta"), K, V, 1.0)
    with pytest.raises(DeviceDtypeError, match="torch.Tensor"):
        ols.ote(W, C0.tolist(), K, V, 1.0)


def test_outputs_keep_the_dtype_of_w():
    W, C0, K, V = small_problem()
    args32 = [x.float() for x in (W, C0, K, V)]
    W32 = ols.ote(*args32, 1.0)
    assert W32.dtype == torch.float32
    assert rel(W32.double(), ols.ote(*[x.double() for x in args32], 1.0)) < 1e-6
    assert ols.se_step(*args32, 1.0).dtype == torch.float32
    assert ols.equality_constrained(*args32).dtype == torch.float32


def test_nullspace_projector_of_zero_keeps_everything():
    zero = torch.zeros(4, 4, dtype=F64)
    for mode in ("absolute", "relative", "energy"):
        P, r = ols.nullspace_projector(zero, 1e-2, mode=mode)
        assert r == 4 and torch.allclose(P, torch.eye(4, dtype=F64), atol=1e-14)
    with pytest.raises(OptionError, match="threshold"):
        ols.nullspace_projector(zero, -1.0)
