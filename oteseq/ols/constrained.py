"""Equality-constrained limit (ROME, EMMET): fit the edits exactly at least ``C``-weighted cost."""
from __future__ import annotations

import torch

from oteseq.errors import ShapeError, SingularSystemError
from oteseq.ols._checks import (as_columns, check_kv, check_nonnegative, check_square,
                                check_symmetric, to_f64)
from oteseq.ols.linalg import solve_spd64


def equality_constrained(W: torch.Tensor, C: torch.Tensor, K: torch.Tensor, V: torch.Tensor,
                         *, ridge: float = 0.0) -> torch.Tensor:
    """Smallest update (in the ``C`` metric) that makes the edited weights fit the keys exactly.

    Minimises ``tr(Δ C Δᵀ)`` subject to ``(W + Δ) K = V`` (EMMET; ROME for one key).
    Closed form (Lagrange): ``Δ = R (Kᵀ C⁻¹ K + ridge I)⁻¹ Kᵀ C⁻¹``, ``R = V − W K``;
    ``ridge > 0`` (EMMET's ``emmet_lambda``) relaxes the constraints and makes the
    ``n × n`` system solvable when keys are (nearly) dependent. It is the ``lam → 0`` limit of
    MEMIT ``R Kᵀ (lam C + K Kᵀ)⁻¹`` when ``n ≤ d_in`` and ``K`` has full column rank.

    Shapes: ``W`` (d_out, d_in), ``C`` (d_in, d_in) SPD, ``K`` (d_in, n), ``V`` (d_out, n)
    → ``Δ`` (d_out, d_in) in ``W``'s dtype.
    """
    ridge = check_nonnegative(ridge, "ridge", "constraint-relaxing")
    W64, C64, K64, V64 = to_f64(W=W, C=C, K=K, V=V)
    check_kv(W64, K64, V64)
    check_square(C64, W64.shape[1], "C")
    check_symmetric(C64, "C", C.dtype)
    CinvK = solve_spd64(C64, K64, side="left", name="C")  # C⁻¹ K, (d_in, n)
    n = K64.shape[1]
    S = K64.T @ CinvK + ridge * torch.eye(n, dtype=W64.dtype, device=W64.device)
    X = solve_spd64(S, V64 - W64 @ K64, name="Kᵀ C⁻¹ K (+ ridge I)")
    return (X @ CinvK.T).to(W.dtype)


def rome(W: torch.Tensor, C: torch.Tensor | None, k: torch.Tensor,
         v: torch.Tensor) -> torch.Tensor:
    """ROME: the rank-one update that maps one key ``k`` exactly to ``v`` at least ``C`` cost.

    Minimises ``tr(Δ C Δᵀ)`` subject to ``(W + Δ) k = v``.
    Closed form: ``Δ = (v − W k) (C⁻¹ k)ᵀ / (kᵀ C⁻¹ k)`` (``C=None`` means ``C = I``, ROME
    without ``mom2_adjustment``).

    Shapes: ``W`` (d_out, d_in), ``C`` (d_in, d_in) SPD or ``None``, ``k`` (d_in,) or
    (d_in, 1), ``v`` (d_out,) or (d_out, 1) → ``Δ`` (d_out, d_in) in ``W``'s dtype.
    """
    W64, C64, k64, v64 = to_f64(W=W, C=C, k=k, v=v)
    k64, v64 = as_columns(k64, "k"), as_columns(v64, "v")
    if k64.shape[1] != 1:
        raise ShapeError(f"rome edits one fact: k must be (d_in,) or (d_in, 1), got "
                         f"{tuple(k.shape)}; use equality_constrained for several keys")
    check_kv(W64, k64, v64, "k", "v")
    if C64 is None:
        u = k64
    else:
        check_square(C64, W64.shape[1], "C")
        check_symmetric(C64, "C", C.dtype)  # type: ignore[union-attr]  # C given when C64 is
        u = solve_spd64(C64, k64, side="left", name="C")  # C⁻¹ k
    denominator = float(k64.T @ u)
    if not denominator > 0.0:
        raise SingularSystemError("k is zero, so kᵀ C⁻¹ k = 0 and no update maps it to v; "
                                  "check the key extraction (subject token, layer)")
    return ((v64 - W64 @ k64) @ u.T / denominator).to(W.dtype)
