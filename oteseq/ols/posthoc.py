"""Post-hoc operators on a computed update (PRUNE, RECT) and the error feedback that re-aligns."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from oteseq.errors import OptionError, ShapeError
from oteseq.ols._checks import check_kv, check_matrix, check_square, check_symmetric, to_f64
from oteseq.ols.linalg import solve_spd64

PostHoc = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A post-hoc operator ``(Δ, W) -> Δ̂`` on an update."""


def _same_shape(delta: torch.Tensor, W: torch.Tensor) -> None:
    check_matrix(delta, "delta")
    if delta.shape != W.shape:
        raise ShapeError(f"delta has shape {tuple(delta.shape)} but W {tuple(W.shape)}; the "
                         f"update and the weight must have the same (d_out, d_in) shape")


def prune(delta: torch.Tensor, W: torch.Tensor, *, base: float = math.e) -> torch.Tensor:
    """PRUNE: compress the singular values of an update that exceed the largest of ``W``.

    Restrains ``‖Δ‖₂`` relative to ``σ_max(W)`` (no objective; a fixed spectral map).
    Closed form: thin SVD ``Δ = U diag(σ) Vᵀ``; every ``σ > σ_max(W)`` becomes
    ``log_b σ − log_b σ_max(W) + σ_max(W)`` (``b = base``), the others are kept; the result is
    rebuilt from the ``rank(Δ)`` non-zero components. The map is monotone, so the order of the
    singular values is kept. It shrinks ``σ`` only when ``σ_max(W) ≥ 1 / ln b``; for smaller
    weights it can enlarge them — that is the reference rule, kept as is. ``W = 0`` leaves ``Δ``
    unchanged.

    Shapes: ``delta``, ``W`` (d_out, d_in) → (d_out, d_in) in ``delta``'s dtype.
    """
    if not base > 1.0:
        raise OptionError(f"base={base}: the logarithm base must be > 1 (e, 2, 1.5, 1.2...)")
    D, W64 = to_f64(delta=delta, W=W)
    _same_shape(D, W64)
    U, sigma, Vh = torch.linalg.svd(D, full_matrices=False)
    sigma_max = float(torch.linalg.matrix_norm(W64, ord=2)) if W64.numel() else 0.0
    mapped = sigma.clone()
    big = sigma > sigma_max
    if sigma_max > 0.0:
        mapped[big] = torch.log(sigma[big] / sigma_max) / math.log(base) + sigma_max
    tol = float(sigma.max()) * max(D.shape) * torch.finfo(D.dtype).eps if sigma.numel() else 0.0
    rank = int((sigma > tol).sum())
    return ((U[:, :rank] * mapped[:rank]) @ Vh[:rank]).to(delta.dtype)


def rect(delta: torch.Tensor, W: torch.Tensor, keep: float = 0.2) -> torch.Tensor:
    """RECT: keep the entries of an update with the largest relative change, zero the rest.

    Scores ``s_ij = |Δ_ij / (W_ij + 1e-8)|``; keeps the ``⌊keep · d_out · d_in + ½⌋`` entries
    with the largest scores (ties: the earlier entry in row-major order wins, so the result is
    deterministic), sets the others to 0. The reference keeps 20 % (original RECT, ``_err``
    variants) or 40 % (``MEMIT_rect``, ``MEMIT_seq_rect``).

    Shapes: ``delta``, ``W`` (d_out, d_in) → (d_out, d_in) in ``delta``'s dtype.
    """
    if not 0.0 <= keep <= 1.0:
        raise OptionError(f"keep={keep}: the kept fraction must lie in [0, 1] (0.2 keeps 20 %)")
    D, W64 = to_f64(delta=delta, W=W)
    _same_shape(D, W64)
    scores = torch.nan_to_num((D / (W64 + 1e-8)).abs(), nan=0.0).flatten()
    n_keep = int(math.floor(keep * scores.numel() + 0.5))
    order = torch.sort(scores, descending=True, stable=True).indices[:n_keep]
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask[order] = True
    return torch.where(mask.view_as(D), D, torch.zeros_like(D)).to(delta.dtype)



def error_feedback_step(W: torch.Tensor, A: torch.Tensor, K: torch.Tensor, V: torch.Tensor,
                        E: torch.Tensor | None, op: PostHoc) -> tuple[torch.Tensor, torch.Tensor]:
    """A sequential step with a post-hoc operator whose error is fed into the next step.

    Solves ``Δ A = R Kᵀ − E`` (``R = V − W K``; ``A`` already contains this batch's ``K Kᵀ``,
    the earlier keys and ``lam C0``), applies the operator ``Δ̂ = op(Δ, W)`` and returns
    ``(Δ̂, E_new)`` with ``E_new = (Δ̂ − Δ) A``; ``E_new`` replaces ``E`` (not accumulated).

    Why it re-aligns: let ``W̄_t = W_{t−1} + Δ_t`` (the weights without the last truncation).
    Then ``W̄_t A_t = W̄_{t−1} A_{t−1} + V_t K_tᵀ`` — the OTE recursion — so ``W̄_t`` is the OTE
    solution and ``W_t = W^OTE_t + (Δ̂_t − Δ_t)``: only the last truncation error stays.
    Without feedback (``E = 0`` every step) the truncation errors accumulate.

    Shapes: ``W`` (d_out, d_in), ``A`` (d_in, d_in) SPD, ``K`` (d_in, n), ``V`` (d_out, n),
    ``E`` (d_out, d_in) or ``None`` (zero), ``op`` a callable ``(Δ, W) -> Δ̂`` such as
    :func:`prune`, :func:`rect` or ``functools.partial(rect, keep=0.4)`` → ``Δ̂`` (d_out, d_in)
    in ``W``'s dtype, ``E_new`` (d_out, d_in) in ``A``'s dtype (keep ``A`` in float64).
    """
    W64, A64, K64, V64, E64 = to_f64(W=W, A=A, K=K, V=V, E=E)
    check_kv(W64, K64, V64)
    check_square(A64, W64.shape[1], "A")
    check_symmetric(A64, "A", A.dtype)
    rhs = (V64 - W64 @ K64) @ K64.T
    if E64 is not None:
        _same_shape(E64, W64)
        rhs = rhs - E64
    delta = solve_spd64(A64, rhs)
    delta_hat = op(delta, W64).to(torch.float64)
    _same_shape(delta_hat, W64)
    return delta_hat.to(W.dtype), ((delta_hat - delta) @ A64).to(A.dtype)
