"""The linear algebra of one memory step: base matrix, Woodbury up/downdates, dense refresh.

Notation (DESIGN.md §1): the normal matrix is ``A = A0 + Σ B Bᵀ`` over the active constraints,
with ``A0 = lam C0 + alpha I`` and ``B = K`` — or, with an AlphaEdit projector ``P``,
``A0 = alpha I + lam P C0 P`` and ``B = P K`` (ridge regression on projected keys). One step
adds the columns ``B_a`` and removes ``B_r``: ``A' = A + B_s S B_sᵀ`` with ``B_s = [B_a, B_r]``
and signs ``S = diag(+1…, −1…)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch

from oteseq.ols.linalg import cholesky


@dataclass(frozen=True)
class ScaledIdentity:
    """``scale · I`` (d, d) without its d² entries: ``A0`` of a memory with ``lam = 0`` (75 MB
    saved per layer at d = 3072). ``A0 @ Y`` gives the bits the dense product gives (the zeros
    add exactly); :meth:`dense` materialises it where a dense matrix is needed (a refresh)."""

    scale: float
    d: int
    dtype: torch.dtype
    device: torch.device

    @property
    def shape(self) -> tuple[int, int]:
        return (self.d, self.d)

    def __matmul__(self, Y: torch.Tensor) -> torch.Tensor:
        return self.scale * Y

    def dense(self) -> torch.Tensor:
        return self.scale * torch.eye(self.d, dtype=self.dtype, device=self.device)

    def inverse(self) -> ScaledIdentity:
        """``I / scale``: its dense form has the bits of ``torch.eye(d) / scale``."""
        return ScaledIdentity(1.0 / self.scale, self.d, self.dtype, self.device)


Matrix = Union[torch.Tensor, ScaledIdentity]


def compact(A0: torch.Tensor) -> Matrix:
    """``A0`` as a :class:`ScaledIdentity` when it is exactly ``scale · I`` (scale > 0), else
    itself; ``dense(compact(A0))`` equals ``A0`` bit for bit."""
    d = A0.shape[0]
    if d == 0 or A0.shape != (d, d):
        return A0
    scale = float(A0[0, 0])
    if scale > 0.0 and bool((A0.diagonal() == scale).all()) and \
            int(torch.count_nonzero(A0)) == d:
        return ScaledIdentity(scale, d, A0.dtype, A0.device)
    return A0


def dense(A0: Matrix) -> torch.Tensor:
    """``A0`` as a dense tensor (a compact one materialised)."""
    return A0.dense() if isinstance(A0, ScaledIdentity) else A0


def base_matrix(C0: torch.Tensor, lam: float, ridge: float,
                P: torch.Tensor | None) -> torch.Tensor:
    """``A0``: the part of the normal matrix that no constraint contributes.

    Closed form: ``lam C0 + ridge I`` without a projector, ``ridge I + lam P C0 P`` with one.
    With ``lam = 0`` (AlphaEdit) it is ``ridge I``: ``P C0 P`` is never formed (two O(d³)
    products that would be multiplied by zero).
    Shapes: ``C0`` (d, d), ``P`` (d, d) or ``None`` → (d, d) float64.
    """
    eye = torch.eye(C0.shape[0], dtype=C0.dtype, device=C0.device)
    if lam == 0.0:
        return ridge * eye
    preserved = C0 if P is None else P @ C0 @ P
    A0 = lam * preserved + ridge * eye
    return (A0 + A0.T) / 2


def project(K: torch.Tensor, P: torch.Tensor | None) -> torch.Tensor:
    """The keys as they enter the normal matrix: ``B = P K`` (or ``K``). (d, n) → (d, n)."""
    return K if P is None else P @ K


def apply_normal(A0: Matrix, P: torch.Tensor | None, K: torch.Tensor,
                 Y: torch.Tensor) -> torch.Tensor:
    """``A Y`` without forming ``A = A0 + (P K)(P K)ᵀ``: O(d² r + d n r) for ``Y`` (d, r)."""
    PY = project(Y, P)
    return A0 @ Y + project(K @ (K.T @ PY), P)


def dense_factor(A0: Matrix, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ``(L, A⁻¹)`` of ``A = A0 + B Bᵀ`` by Cholesky (an O(d³) refresh).

    Raises :class:`~oteseq.errors.SingularSystemError` when ``A`` is singular (e.g. ``lam = 0``,
    no ridge and fewer independent keys than ``d_in``). Shapes: ``B`` (d, n) → (d, d), (d, d).
    """
    A = torch.addmm(dense(A0), B, B.T)
    L = cholesky(A, name="A = lam·C0 + ridge·I + Σ K Kᵀ")
    A_inv = torch.cholesky_solve(torch.eye(A.shape[0], dtype=A.dtype, device=A.device), L)
    return L, (A_inv + A_inv.T) / 2  # (torch.cholesky_inverse is ~10x slower on CPU)


def ote_update(W0: torch.Tensor, K: torch.Tensor, V: torch.Tensor, P: torch.Tensor | None,
               L: torch.Tensor) -> torch.Tensor:
    """The OTE update from scratch: ``Δ = (V − W0 K) Bᵀ A⁻¹`` with ``B = P K``, ``A = L Lᵀ``.

    Solves with ``Bᵀ`` as right-hand side when there are fewer constraints than outputs
    (O(d_in² n)), else forms ``M = (V − W0 K) Bᵀ`` first (O(d_out d_in (n + d_in))).
    Shapes: ``W0`` (d_out, d_in), ``K`` (d_in, n), ``V`` (d_out, n) → (d_out, d_in).
    """
    B = project(K, P)
    R0 = V - W0 @ K
    if K.shape[1] <= W0.shape[0]:
        return R0 @ torch.cholesky_solve(B, L).T
    return torch.cholesky_solve((R0 @ B.T).T, L).T


@dataclass(frozen=True)
class Woodbury:
    """``X = A'⁻¹ B_s`` and, when asked for, ``A'⁻¹`` itself; ``cond`` of the small system."""

    X: torch.Tensor
    A_inv: torch.Tensor | None
    cond: float


def woodbury(A_inv: Matrix, U: torch.Tensor, B: torch.Tensor, signs: torch.Tensor,
             need_inverse: bool, out: torch.Tensor | None = None) -> Woodbury | None:
    """Rank-m update/downdate of an inverse: ``(A + B S Bᵀ)⁻¹`` from ``A⁻¹`` in O(d² m).

    Closed form, with ``U = A⁻¹ B`` and the capacitance ``C = S + Bᵀ U`` (m, m):
    ``(A + B S Bᵀ)⁻¹ = A⁻¹ − U C⁻¹ Uᵀ`` and ``(A + B S Bᵀ)⁻¹ B = U C⁻¹ S``.
    ``A'`` stays positive definite iff ``C`` has as many negative eigenvalues as ``S`` has −1
    (Haynsworth inertia); returns ``None`` when it does not or ``C`` is nearly singular, and the
    caller falls back to an exact factorisation (which names the problem if there is one).
    Shapes: ``A_inv`` (d, d), ``U``, ``B`` (d, m), ``signs`` (m,) of ±1. ``out``: a (d, d)
    buffer, not ``A_inv`` itself, that receives the new inverse (no allocation).
    """
    C = torch.diag(signs) + B.T @ U
    C = (C + C.T) / 2
    eigenvalues = torch.linalg.eigvalsh(C)
    magnitude = eigenvalues.abs()
    if int((eigenvalues < 0).sum()) != int((signs < 0).sum()) or \
            float(magnitude.min()) <= 1e-12 * float(magnitude.max()):
        return None
    C_inv_Ut = torch.linalg.solve(C, U.T)                          # (m, d)
    X = C_inv_Ut.T * signs
    if not need_inverse:
        A_inv_new = None
    elif out is not None and out.shape == A_inv.shape and out.dtype == A_inv.dtype:
        A_inv_new = torch.addmm(dense(A_inv), U, C_inv_Ut, alpha=-1.0, out=out)
    else:
        A_inv_new = torch.addmm(dense(A_inv), U, C_inv_Ut, alpha=-1.0)
    return Woodbury(X, A_inv_new, float(magnitude.max() / magnitude.min()))


def forward_error(A0: Matrix, P: torch.Tensor | None, K_active: torch.Tensor,
                  X: torch.Tensor, B: torch.Tensor, A_inv: Matrix) -> float:
    """Estimated relative error of a solve ``X ≈ A⁻¹ B`` (the drift check), by one step of
    iterative refinement on ``x = X·1``, ``b = B·1``: ``‖A_inv (b − A x)‖ / ‖x‖``.

    ``A = A0 + (P K)(P K)ᵀ`` over ``K_active``; costs two products with d×d matrices,
    O(d² + d n). A fresh Cholesky solve gives about eps·cond(A); Woodbury up/downdates of the
    inverse may let it grow, and the memory refreshes when it does.
    """
    x = X.sum(dim=1, keepdim=True)
    size = float(torch.linalg.norm(x))
    if size == 0.0:
        return 0.0
    correction = A_inv @ (B.sum(dim=1, keepdim=True) - apply_normal(A0, P, K_active, x))
    return float(torch.linalg.norm(correction)) / size


def probe_error(A0: Matrix, A_inv: Matrix) -> float:
    """:func:`forward_error` of a fresh ``A0⁻¹`` on a fixed random probe: the error level an
    exact solve reaches (about eps·cond(A0)), so the drift check does not refresh for nothing."""
    probe = torch.randn(A0.shape[0], 1, generator=torch.Generator().manual_seed(0),
                        dtype=A0.dtype).to(A0.device)
    return forward_error(A0, None, probe.new_zeros(A0.shape[0], 0), A_inv @ probe, probe, A_inv)
