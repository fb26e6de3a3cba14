"""Removing and replacing constraints: exact downdates of the accumulated normal matrix ``A``.

If ``W`` solves ``W A = lam W0 C0 + Σ_s V_s K_sᵀ`` (OTE over the active edits), the functions
here return the update after which ``W + Δ`` solves the same equations over the edited set.
"""
from __future__ import annotations

import torch

from oteseq.ols._checks import check_kv, check_square, check_symmetric, to_f64
from oteseq.ols.linalg import solve_spd64


def downdate_step(W: torch.Tensor, A: torch.Tensor, K_old: torch.Tensor,
                  V_old: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Retract edits: remove the constraints ``(K_old, V_old)`` from the least-squares problem.

    Keeps the OTE normal equations over the remaining edits:
    ``A_new = A − K_old K_oldᵀ``, ``Δ A_new = (W K_old − V_old) K_oldᵀ``; then
    ``(W + Δ) A_new = W A − V_old K_oldᵀ``, the OTE over the remaining set.
    ``A_new`` must stay SPD (it does when ``A`` contains ``lam C0`` with ``lam > 0``, or a ridge).
    The subtraction loses digits when ``A ≫ K_old K_oldᵀ``; keep ``A`` in float64.

    Shapes: ``W`` (d_out, d_in), ``A`` (d_in, d_in), ``K_old`` (d_in, n), ``V_old``
    (d_out, n) → ``Δ`` (d_out, d_in) in ``W``'s dtype, ``A_new`` (d_in, d_in) in ``A``'s dtype.
    """
    W64, A64, Ko, Vo = to_f64(W=W, A=A, K_old=K_old, V_old=V_old)
    check_kv(W64, Ko, Vo, "K_old", "V_old")
    check_square(A64, W64.shape[1], "A")
    check_symmetric(A64, "A", A.dtype)
    A_new = A64 - Ko @ Ko.T
    delta = solve_spd64(A_new, (W64 @ Ko - Vo) @ Ko.T, name="A − K_old K_oldᵀ")
    return delta.to(W.dtype), A_new.to(A.dtype)


def replace_step(W: torch.Tensor, A: torch.Tensor, K_old: torch.Tensor, V_old: torch.Tensor,
                 K_new: torch.Tensor, V_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Resolve a conflict: swap the constraints ``(K_old, V_old)`` for ``(K_new, V_new)``.

    Keeps the OTE normal equations over the de-conflicted set (latest wins):
    ``A_new = A − K_old K_oldᵀ + K_new K_newᵀ``,
    ``Δ A_new = (V_new − W K_new) K_newᵀ − (V_old − W K_old) K_oldᵀ``; then
    ``(W + Δ) A_new = W A − V_old K_oldᵀ + V_new K_newᵀ``.

    Shapes: ``W`` (d_out, d_in), ``A`` (d_in, d_in), ``K_old`` (d_in, n), ``V_old`` (d_out, n),
    ``K_new`` (d_in, m), ``V_new`` (d_out, m) → ``Δ`` (d_out, d_in) in ``W``'s dtype,
    ``A_new`` (d_in, d_in) in ``A``'s dtype.
    """
    W64, A64, Ko, Vo, Kn, Vn = to_f64(W=W, A=A, K_old=K_old, V_old=V_old, K_new=K_new,
                                      V_new=V_new)
    check_kv(W64, Ko, Vo, "K_old", "V_old")
    check_kv(W64, Kn, Vn, "K_new", "V_new")
    check_square(A64, W64.shape[1], "A")
    check_symmetric(A64, "A", A.dtype)
    A_new = A64 - Ko @ Ko.T + Kn @ Kn.T
    rhs = (Vn - W64 @ Kn) @ Kn.T - (Vo - W64 @ Ko) @ Ko.T
    delta = solve_spd64(A_new, rhs, name="A − K_old K_oldᵀ + K_new K_newᵀ")
    return delta.to(W.dtype), A_new.to(A.dtype)
