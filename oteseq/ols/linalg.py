"""Symmetric positive definite solves by Cholesky, with named errors when they fail."""
from __future__ import annotations

from typing import Literal

import torch

from oteseq.errors import NotPSDError, OptionError, ShapeError, SingularSystemError
from oteseq.ols._checks import check_square, check_symmetric, to_f64

_FIX = "add lam*C0 (lam > 0), a ridge alpha*I, or more keys"


def cholesky(A: torch.Tensor, name: str = "A") -> torch.Tensor:
    """Lower Cholesky factor ``L`` of a float64 SPD matrix, ``A = L Lᵀ``.

    Raises :class:`SingularSystemError` when ``A`` is positive semi-definite but (numerically)
    singular, :class:`NotPSDError` when it has a clearly negative direction. Singularity is
    detected when Cholesky fails or when its smallest pivot ``min L_ii²`` (an upper bound on
    the smallest eigenvalue) is below ``d·eps·max A_ii``.
    """
    d = A.shape[0]
    if d == 0:
        return A.clone()
    A = (A + A.T) / 2
    L, info = torch.linalg.cholesky_ex(A)
    scale = float(A.diagonal().abs().max())
    floor = d * torch.finfo(torch.float64).eps * max(scale, torch.finfo(torch.float64).tiny)
    if int(info) == 0 and float(L.diagonal().min()) ** 2 > floor:
        return L
    # Tell "singular but PSD" from "indefinite": shift by a small multiple of the scale.
    shifted = A + (1e-8 * scale + floor) * torch.eye(d, dtype=A.dtype, device=A.device)
    if int(torch.linalg.cholesky_ex(shifted)[1]) == 0:
        raise SingularSystemError(
            f"{name} ({d}×{d}) is singular: the constraints do not determine a unique update "
            f"(e.g. lam = 0 with fewer independent keys than d_in = {d}); {_FIX}")
    raise NotPSDError(f"{name} ({d}×{d}) is not positive semi-definite (Cholesky fails even "
                      f"after a small diagonal shift); check that C0 is a second moment "
                      f"K0 K0ᵀ / N and that lam and alpha are ≥ 0")


def solve_spd(A: torch.Tensor, B: torch.Tensor, *,
              side: Literal["right", "left"] = "right") -> torch.Tensor:
    """Solve a linear system with a symmetric positive definite matrix, by Cholesky.

    Minimises ``‖X A^{1/2} − B A^{-1/2}‖²`` — i.e. returns the unique ``X`` with

    - ``side="right"``: ``X A = B``, ``B`` (m, d) → ``X = B A⁻¹`` (m, d);
    - ``side="left"``: ``A X = B``, ``B`` (d, m) → ``X = A⁻¹ B`` (d, m).

    Closed form: ``A = L Lᵀ``; ``X = cholesky_solve(Bᵀ, L)ᵀ`` (right) or
    ``cholesky_solve(B, L)`` (left); no explicit inverse. Computed in float64 on ``A``'s device,
    returned in ``B``'s dtype. ``A`` (d, d) must be symmetric (relative tolerance
    ``sqrt(eps)`` of its dtype); :class:`SingularSystemError` / :class:`NotPSDError` name the fix.
    """
    if side not in ("right", "left"):
        raise OptionError(f"side={side!r}: use 'right' (X A = B) or 'left' (A X = B)")
    A64, B64 = to_f64(A=A, B=B)
    check_square(A64, A64.shape[0] if A64.ndim == 2 else -1, "A")
    check_symmetric(A64, "A", A.dtype)
    d = A64.shape[0]
    if B64.ndim != 2 or B64.shape[1 if side == "right" else 0] != d:
        want = f"(m, {d})" if side == "right" else f"({d}, m)"
        raise ShapeError(f"B has shape {tuple(B.shape)}; with A ({d}×{d}) and side={side!r} it "
                         f"must be {want}")
    return solve_spd64(A64, B64, side=side).to(B.dtype)


def solve_spd64(A: torch.Tensor, B: torch.Tensor, *, side: str = "right",
                name: str = "A") -> torch.Tensor:
    """:func:`solve_spd` on float64 tensors already checked (internal, no validation)."""
    L = cholesky(A, name)
    if side == "right":
        return torch.cholesky_solve(B.T, L).T
    return torch.cholesky_solve(B, L)
